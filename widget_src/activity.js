/*
 * smsgate widget: what amoCRM's automations and lists sent, on the settings page (loaded by script.js).
 *
 * GET /api/v1/crm/activity/?days=N: the digital pipeline's action, Salesbot's step and list sends of the last
 * days, each by outcome (sent; skipped: no phone; refused: limits; refused: no provider key; other refusals;
 * failed; in progress), and the pipeline's webhook calls refused for want of the account's key. A table, text
 * only: nothing from the server is parsed as HTML.
 */
define(['jquery'], function ($) {
  'use strict';

  var PERIODS = [7, 30];
  var SOURCES = ['pipeline', 'salesbot', 'list'];
  var OUTCOMES = ['sent', 'no_phone', 'refused_limits', 'refused_no_key', 'refused_other', 'failed', 'in_progress'];

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

  // options: {call(method, path), errorText(xhr), i18n, lang, $where}
  function render(options) {
    var texts = options.i18n('activity') || {};
    var lang = options.lang || 'ru';
    var $where = options.$where;
    var days = PERIODS[0];

    function t(key, values) {
      var text = texts[key] || key;
      Object.keys(values || {}).forEach(function (name) {
        text = text.split('{' + name + '}').join(String(values[name]));
      });
      return text;
    }

    function number(value) {
      return Number(value || 0).toLocaleString(lang);
    }

    function draw(reply) {
      var $periods = el('div', 'smsgate-activity-periods');
      $.each(PERIODS, function (i, period) {
        $periods.append(el('button', 'smsgate-button smsgate-activity-period' + (period === days ? ' is-active' : ''),
          t('days', {days: period})).attr('type', 'button').on('click', function () {
          days = period;
          load();
        }));
      });
      var $head = el('tr').append(el('th', '', t('source')));
      $.each(OUTCOMES, function (i, outcome) {
        $head.append(el('th', 'smsgate-activity-' + outcome, t(outcome)));
      });
      var $body = el('tbody');
      $.each(SOURCES, function (i, source) {
        var counts = reply[source] || {};
        var $row = el('tr', 'smsgate-activity-row').attr('data-source', source).append(el('th', '', t(source)));
        $.each(OUTCOMES, function (j, outcome) {
          $row.append(el('td', 'smsgate-activity-' + outcome + (counts[outcome] ? ' has-value' : ''),
            number(counts[outcome])));
        });
        $body.append($row);
      });
      $where.empty().append(
        el('h3', 'smsgate-subtitle', t('title')),
        el('p', 'smsgate-help', t('intro')),
        $periods,
        el('table', 'smsgate-table smsgate-activity-table').append(el('thead').append($head), $body));
      var pipeline = reply.pipeline || {};
      if (pipeline.refused_calls) {
        $where.append(el('div', 'smsgate-notice smsgate-notice_error smsgate-activity-key',
          t('refused_calls', {count: number(pipeline.refused_calls)})));
      }
      if ((reply.salesbot || {}).bots_not_continued) {
        $where.append(el('div', 'smsgate-notice smsgate-activity-bots',
          t('bots_not_continued', {count: number(reply.salesbot.bots_not_continued)})));
      }
    }

    function load() {
      options.call('GET', '/crm/activity/?days=' + days).then(draw, function (xhr) {
        $where.empty().append(el('h3', 'smsgate-subtitle', t('title')),
          el('div', 'smsgate-notice smsgate-notice_error', options.errorText(xhr)));
      });
    }

    load();
    return {reload: load};
  }

  return {render: render};
});
