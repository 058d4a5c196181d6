/*
 * smsgate widget: the owner's alerts and figures on the settings page (loaded by script.js).
 *
 * Alerts (GET/PUT /api/v1/alerts/): low balance under the owner's threshold, a broken route, a route
 * that sends nothing (the console provider), a drop in the delivery rate; an administrator sets the
 * thresholds and whether alerts also become amoCRM tasks. Figures (GET /api/v1/stats/): SMS per day
 * by status and by source, per route the delivery rate and the median time to delivered, parts
 * sent, the top failure reasons. The charts are drawn by Chart.js, which the smsgate deployment
 * serves as a static file (loaded here with RequireJS, never from a CDN); every figure is also
 * written out as text, so the page says everything without the charts too.
 */
define(['jquery'], function ($) {
  'use strict';

  var CHART_JS = '/static/deliveries/vendor/chartjs-4.6.1/chart.umd.min.js';
  var PERIODS = [7, 30, 90];
  var STATUS_COLORS = {
    delivered: '#2e9b52', sent: '#7fb3e6', pending: '#c7ced9', sending: '#c7ced9', unknown: '#b39ddb',
    undelivered: '#e57373', expired: '#ffb74d', rejected: '#d84315', failed: '#8d1c13'
  };
  var STATUS_ORDER = ['delivered', 'sent', 'pending', 'unknown', 'undelivered', 'expired', 'rejected', 'failed'];
  var SOURCE_COLORS = {
    system: '#2176d6', crm: '#2e9b52', pipeline: '#f2a93b', salesbot: '#8e5bd6', list: '#e0567a',
    bulk: '#5c6bc0', test: '#9aa5b1', '': '#d5dbe3'
  };

  function el(tag, className, text) {
    var $node = $('<' + tag + '>');
    if (className) {
      $node.addClass(className);
    }
    if (text !== undefined && text !== null) {
      $node.text(text);
    }
    return $node;
  }

  function Figures(options) {
    var self = this;
    var call = options.call;
    var lang = options.lang || 'ru';
    var texts = options.i18n('figures') || {};
    var statusTexts = options.i18n('statuses') || {};
    var $alerts = options.$alerts;
    var $figures = options.$figures;
    var days = 30;
    var charts = [];

    function t(key, values) {
      var text = texts[key] || key;
      Object.keys(values || {}).forEach(function (name) {
        text = text.split('{' + name + '}').join(String(values[name]));
      });
      return text;
    }

    function number(value, digits) {
      return Number(value).toLocaleString(lang, {maximumFractionDigits: digits || 0,
        minimumFractionDigits: digits || 0});
    }

    function percent(rate) {
      return rate === null || rate === undefined ? '—' : number(rate * 100, 1) + ' %';
    }

    function duration(seconds) {
      if (seconds === null || seconds === undefined) {
        return '—';
      }
      if (seconds > 86400) {
        return t('over_a_day');
      }
      if (seconds < 60) {
        return t('seconds', {n: number(seconds, seconds < 10 ? 1 : 0)});
      }
      if (seconds < 3600) {
        return t('minutes', {m: Math.floor(seconds / 60), s: Math.round(seconds % 60)});
      }
      return t('hours', {h: Math.floor(seconds / 3600), m: Math.round((seconds % 3600) / 60)});
    }

    function dayLabel(iso) {
      var date = new Date(iso + 'T12:00:00');
      return isNaN(date.getTime()) ? iso : date.toLocaleDateString(lang, {day: 'numeric', month: 'short'});
    }

    function errorText(xhr) {
      var body = xhr && xhr.responseJSON;
      return body && body.detail ? body.detail : t('error');
    }

    // --- alerts ---------------------------------------------------------------------------------
    function loadAlerts() {
      return call('GET', '/alerts/').then(renderAlerts, function (xhr) {
        $alerts.empty().append(el('div', 'smsgate-notice smsgate-notice_error', errorText(xhr)));
      });
    }

    function renderAlerts(reply) {
      $alerts.empty().append(el('h3', 'smsgate-subtitle', t('alerts_title')));
      if (!reply.alerts.length) {
        $alerts.append(el('p', 'smsgate-muted smsgate-no-alerts', t('no_alerts')));
      }
      $.each(reply.alerts, function (i, alert) {
        $alerts.append(el('div', 'smsgate-alert smsgate-alert_' + alert.code).attr('data-code', alert.code)
          .attr('data-route-id', alert.route_id === null ? '' : alert.route_id)
          .append(el('strong', 'smsgate-alert-title', alert.title), el('div', 'smsgate-alert-detail', alert.detail)));
      });
      renderAlertSettings(reply);
    }

    function balanceText(item) {
      if (!item.supports_balance) {
        return t('balance_unsupported');
      }
      if (item.error) {
        return t('balance_error', {reason: item.error});
      }
      if (item.amount === null) {
        return t('balance_unread');
      }
      var when = new Date(item.checked_at);
      return t('balance_last', {amount: number(item.amount, 2), currency: item.currency,
        time: isNaN(when.getTime()) ? '' : when.toLocaleString(lang)});
    }

    function renderAlertSettings(reply) {
      var $box = el('div', 'smsgate-alert-settings');
      $alerts.append($box);
      if (!reply.balances.length) {
        return;
      }
      var $table = el('table', 'smsgate-table smsgate-thresholds');
      $table.append(el('thead').append(el('tr').append(el('th', '', t('col_route')),
        el('th', '', t('col_threshold')), el('th', '', t('col_balance')))));
      var $body = el('tbody');
      $.each(reply.balances, function (i, item) {
        var $threshold;
        if (options.isAdmin && item.supports_balance) {
          $threshold = el('input', 'smsgate-input smsgate-threshold').attr({type: 'text', inputmode: 'decimal',
            name: 'threshold-' + item.route_id, placeholder: t('threshold_none'), 'data-route-id': item.route_id})
            .val(item.below === null ? '' : item.below);
        } else {
          $threshold = el('span', 'smsgate-muted', item.below === null ? t('threshold_none') : item.below);
        }
        $body.append(el('tr', 'smsgate-threshold-row').attr('data-route-id', item.route_id).append(
          el('td', '', item.name), el('td').append($threshold), el('td', 'smsgate-balance-read', balanceText(item))));
      });
      $box.append(el('p', 'smsgate-help', t('threshold_help')), $table.append($body));
      var $tasks = el('input', 'smsgate-amo-tasks').attr({type: 'checkbox', name: 'amo_tasks'})
        .prop('checked', reply.amo_tasks).prop('disabled', !options.isAdmin);
      $box.append(el('label', 'smsgate-checkbox').append($tasks, ' ', el('span', '', t('amo_tasks'))));
      var $message = el('div', 'smsgate-alert-message');
      if (options.isAdmin) {
        $box.append($message, el('button', 'smsgate-button smsgate-button_primary smsgate-alerts-save', t('save'))
          .attr('type', 'button').on('click', function () {
            var thresholds = [];
            $box.find('.smsgate-threshold').each(function () {
              var value = $.trim($(this).val()).replace(',', '.');
              thresholds.push({route_id: Number($(this).attr('data-route-id')), below: value === '' ? null : value});
            });
            call('PUT', '/alerts/', {amo_tasks: $tasks.prop('checked'), thresholds: thresholds}).then(function (again) {
              renderAlerts(again);
              $alerts.find('.smsgate-alert-message').empty()
                .append(el('div', 'smsgate-notice', t('saved')));
            }, function (xhr) {
              var body = xhr && xhr.responseJSON;
              var parts = [errorText(xhr)];
              if (body && body.errors) {
                $.each(body.errors, function (field, messages) {
                  parts.push([].concat(messages).join(' '));
                });
              }
              $message.empty().append(el('div', 'smsgate-notice smsgate-notice_error', parts.join(' ')));
            });
          }));
      }
    }

    // --- figures ------------------------------------------------------------------------------------
    function loadFigures() {
      $figures.find('.smsgate-figures-body').empty().append(el('p', 'smsgate-muted', t('loading')));
      return call('GET', '/stats/?days=' + days).then(renderFigures, function (xhr) {
        $figures.find('.smsgate-figures-body').empty()
          .append(el('div', 'smsgate-notice smsgate-notice_error', errorText(xhr)));
      });
    }

    function renderFrame() {
      var $period = el('select', 'smsgate-input smsgate-period').attr('name', 'period');
      $.each(PERIODS, function (i, n) {
        $period.append(el('option', '', t('last_days', {n: n})).val(n));
      });
      $period.val(String(days)).on('change', function () {
        days = Number($period.val());
        loadFigures();
      });
      $figures.empty().append(el('h3', 'smsgate-subtitle', t('figures_title')),
        el('div', 'smsgate-toolbar').append($period), el('div', 'smsgate-figures-body'));
    }

    function sum(list, key) {
      var total = 0;
      $.each(list, function (i, item) {
        total += item[key] || 0;
      });
      return total;
    }

    function renderFigures(stats) {
      var $body = $figures.find('.smsgate-figures-body').empty();
      var total = sum(stats.series, 'total');
      var delivered = 0;
      var finished = 0;
      $.each(stats.routes, function (i, route) {
        delivered += route.delivered;
        finished += route.finished;
      });
      $body.append(el('div', 'smsgate-tiles').append(
        tile('smsgate-tile-total', t('tile_total'), number(total)),
        tile('smsgate-tile-rate', t('tile_rate'), finished ? percent(delivered / finished) : '—'),
        tile('smsgate-tile-parts', t('tile_parts'), number(stats.parts)).attr('title', t('parts_help'))));
      if (!total) {
        $body.append(el('p', 'smsgate-muted smsgate-no-figures', t('no_figures')));
        return;
      }
      var $status = el('div', 'smsgate-chart smsgate-chart-status');
      var $source = el('div', 'smsgate-chart smsgate-chart-source');
      $body.append(el('h4', 'smsgate-chart-title', t('chart_status')), $status,
        el('h4', 'smsgate-chart-title', t('chart_source')), $source);
      $body.append(routesTable(stats.routes), sourcesTable(stats.sources), reasonsList(stats.failure_reasons));
      drawCharts(stats, $status, $source);
    }

    function tile(className, label, value) {
      return el('div', 'smsgate-tile ' + className).append(el('div', 'smsgate-tile-value', value),
        el('div', 'smsgate-tile-label', label));
    }

    function routesTable(routes) {
      var $box = el('div', 'smsgate-figures-routes').append(el('h4', 'smsgate-chart-title', t('routes_title')));
      if (!routes.length) {
        return $box.append(el('p', 'smsgate-muted', t('no_routes')));
      }
      var $body = el('tbody');
      $.each(routes, function (i, route) {
        $body.append(el('tr', 'smsgate-figures-route').attr('data-route-id', route.route_id === null ? '' : route.route_id)
          .append(el('td', '', route.name), el('td', 'smsgate-num', number(route.total)),
            el('td', 'smsgate-num smsgate-route-rate', percent(route.delivery_rate)),
            el('td', 'smsgate-num smsgate-route-median', duration(route.median_seconds)),
            el('td', 'smsgate-num smsgate-route-parts', number(route.parts))));
      });
      return $box.append(el('table', 'smsgate-table smsgate-figures-table').append(el('thead').append(el('tr').append(
        el('th', '', t('col_route')), el('th', 'smsgate-num', t('col_sms')), el('th', 'smsgate-num', t('col_rate')),
        el('th', 'smsgate-num', t('col_median')), el('th', 'smsgate-num', t('col_parts')))), $body));
    }

    function sourcesTable(sources) {
      var $body = el('tbody');
      $.each(sources, function (i, source) {
        $body.append(el('tr', 'smsgate-figures-source').attr('data-source', source.source).append(
          el('td', '', source.label), el('td', 'smsgate-num', number(source.total)),
          el('td', 'smsgate-num', number(source.parts))));
      });
      return el('div', 'smsgate-figures-sources').append(el('h4', 'smsgate-chart-title', t('sources_title')),
        el('table', 'smsgate-table smsgate-figures-table').append(el('thead').append(el('tr').append(
          el('th', '', t('col_source')), el('th', 'smsgate-num', t('col_sms')),
          el('th', 'smsgate-num', t('col_parts')))), $body));
    }

    function reasonsList(reasons) {
      var $box = el('div', 'smsgate-figures-reasons').append(el('h4', 'smsgate-chart-title', t('reasons_title')));
      if (!reasons.length) {
        return $box.append(el('p', 'smsgate-muted', t('no_reasons')));
      }
      var $list = el('ol', 'smsgate-reasons');
      $.each(reasons, function (i, reason) {
        $list.append(el('li', 'smsgate-reason').attr({'data-status': reason.status, 'data-error': reason.error_class})
          .append(el('span', 'smsgate-reason-text', reason.text), ' — ',
            el('strong', 'smsgate-reason-count', number(reason.count))));
      });
      return $box.append($list);
    }

    // --- charts (Chart.js from the deployment) ----------------------------------------------------
    function drawCharts(stats, $status, $source) {
      var labels = $.map(stats.series, function (day) { return dayLabel(day.date); });
      var statusSets = [];
      $.each(STATUS_ORDER, function (i, status) {
        var values = $.map(stats.series, function (day) {
          return (day.by_status[status] || 0) + (status === 'pending' ? day.by_status.sending || 0 : 0);
        });
        if (values.some(function (v) { return v > 0; })) {
          statusSets.push({label: statusTexts[status] || status, data: values, backgroundColor: STATUS_COLORS[status],
            key: status});
        }
      });
      var sourceSets = $.map(stats.sources, function (source) {
        return {label: source.label, key: source.source, backgroundColor: SOURCE_COLORS[source.source] || '#9aa5b1',
          data: $.map(stats.series, function (day) { return day.by_source[source.source] || 0; })};
      });
      var url = options.baseUrl + CHART_JS + (options.version ? '?v=' + encodeURIComponent(options.version) : '');
      require([url], function (Chart) {
        $.each(charts, function (i, chart) { chart.destroy(); });
        charts = [draw(Chart, $status, labels, statusSets), draw(Chart, $source, labels, sourceSets)];
      }, function () {
        $status.add($source).empty().append(el('p', 'smsgate-muted smsgate-no-charts', t('charts_unavailable')));
      });
    }

    function draw(Chart, $box, labels, datasets) {
      var $canvas = el('canvas').attr({role: 'img', 'aria-label': $box.prev('h4').text()});
      $box.empty().append(el('div', 'smsgate-chart-frame').append($canvas));
      return new Chart($canvas.get(0), {
        type: 'bar',
        data: {labels: labels, datasets: datasets},
        options: {
          locale: lang,
          animation: false,
          responsive: true,
          maintainAspectRatio: false,
          interaction: {mode: 'index', intersect: false},
          plugins: {legend: {position: 'bottom', labels: {boxWidth: 12}}},
          scales: {
            x: {stacked: true, grid: {display: false}, ticks: {autoSkip: true, maxRotation: 0}},
            y: {stacked: true, beginAtZero: true, ticks: {precision: 0}}
          }
        }
      });
    }

    self.render = function () {
      renderFrame();
      loadAlerts();
      loadFigures();
    };
    self.refreshAlerts = loadAlerts;
  }

  return {
    /* options: call(method, path, body), i18n, lang, baseUrl, version, isAdmin, $alerts, $figures */
    render: function (options) {
      var figures = new Figures(options);
      figures.render();
      return figures;
    }
  };
});
