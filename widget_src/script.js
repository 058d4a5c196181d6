/*
 * smsgate widget for amoCRM / Kommo.
 *
 * Locations: `sms` (amoCRM posts system SMS straight to the manifest's sms.endpoint; nothing runs
 * here), `lcard-1` and `ccard-1` (the lead's and the contact's card: card.js draws the SMS panel in the
 * right column and sends the feed's SMS input through smsgate; loaded only there), `digital_pipeline`
 * (the "send SMS" action: dpSettings loads pipeline.js), `salesbot_designer` (Salesbot's "send SMS"
 * step: salesbot.js, preloaded by init, since amoCRM wants its two callbacks' answers at once),
 * `llist`/`clist` (an SMS to the selected leads or contacts: leads.selected / contacts.selected open
 * listsend.js's dialog) and `settings`, where this script draws the settings page (figures.js adds the
 * owner's alerts and figures, activity.js the automations' outcomes): the account's SMS provider
 * routes (a form generated from the provider catalogue), their order, the delivery-report URL,
 * a test SMS, the balance, the account's SMS templates (with amoCRM markers, a marker picker and a
 * live part counter from the server's preview) and the latest deliveries. Every call goes to the
 * smsgate API through `self.$authorizedAjax`, which adds amoCRM's one-time token as X-Auth-Token.
 */
define(['jquery'], function ($) {
  'use strict';

  var BASE_URL = '{{SMSGATE_BASE_URL}}';
  var API = BASE_URL + '/api/v1';
  var STATUSES = ['pending', 'sending', 'sent', 'delivered', 'undelivered', 'expired', 'rejected', 'failed',
    'unknown'];

  return function SmsgateWidget() {
    var self = this;
    var state = {};

    function t(key) {
      var texts = self.i18n('settings_page') || {};
      return texts[key] || key;
    }

    function tt(key, values) {
      var texts = self.i18n('templates') || {};
      var text = texts[key] || key;
      // Not $.each: it would take {length: 0, ...} for an empty array.
      Object.keys(values || {}).forEach(function (name) {
        text = text.split('{' + name + '}').join(String(values[name]));
      });
      return text;
    }

    function statusText(status) {
      var texts = self.i18n('statuses') || {};
      return texts[status] || status;
    }

    function lang() {
      var meta = self.i18n('meta') || {};
      return meta.lang || 'ru';
    }

    // --- the API ------------------------------------------------------------------------------
    function call(method, path, body) {
      var options = {
        url: API + path,
        type: method,
        dataType: 'json',
        headers: {'Accept-Language': lang()}
      };
      if (body !== undefined) {
        options.contentType = 'application/json';
        options.data = JSON.stringify(body);
      }
      return self.$authorizedAjax(options);
    }

    function errorText(xhr) {
      var body = xhr && xhr.responseJSON;
      if (!body) {
        return t(xhr && xhr.status ? 'error_generic' : 'error_network');
      }
      var parts = [body.detail || t('error_generic')];
      if (body.errors) {
        $.each(body.errors, function (field, messages) {
          var list = $.isArray(messages) ? messages : [messages];
          $.each(list, function (i, message) {
            parts.push(typeof message === 'string' ? message : JSON.stringify(message));
          });
        });
      }
      return parts.join(' ');
    }

    // --- small DOM helpers (text only: nothing from the server is ever parsed as HTML) ----------
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

    function button(text, className, onClick) {
      return el('button', 'smsgate-button ' + (className || ''), text).attr('type', 'button').on('click', onClick);
    }

    function notice($where, text, isError) {
      $where.empty().append(el('div', isError ? 'smsgate-notice smsgate-notice_error' : 'smsgate-notice', text));
    }

    function formatTime(iso) {
      if (!iso) {
        return '';
      }
      var date = new Date(iso);
      return isNaN(date.getTime()) ? iso : date.toLocaleString(lang());
    }

    // --- the page -------------------------------------------------------------------------------
    function renderPage($root) {
      state = {providers: [], routes: [], account: null, editing: null, cursor: null, status: '', templates: [],
        markers: [], editingTemplate: null};
      $root.find('.smsgate-settings').remove();
      var $page = el('div', 'smsgate-settings');
      $page.append(
        el('h2', 'smsgate-title', t('title')),
        el('p', 'smsgate-intro', t('intro')),
        el('div', 'smsgate-account'),
        el('div', 'smsgate-message'),
        el('div', 'smsgate-alerts'),
        el('div', 'smsgate-routes').append(el('p', 'smsgate-muted', t('loading'))),
        el('div', 'smsgate-form'),
        el('div', 'smsgate-test'),
        el('div', 'smsgate-figures'),
        el('div', 'smsgate-activity'),
        el('div', 'smsgate-templates'),
        el('div', 'smsgate-pipeline'),
        el('div', 'smsgate-deliveries')
      );
      $root.append($page);
      state.$page = $page;

      var loading = $.when(call('GET', '/account/'), call('GET', '/providers/'), call('GET', '/templates/markers/'));
      loading.then(function (accountReply, providersReply, markersReply) {
        state.account = accountReply[0];
        state.providers = providersReply[0];
        state.markers = markersReply[0];
        renderAccount();
        renderFigures();
        renderActivity();
        loadRoutes();
        loadTemplates();
        renderPipeline();
        renderDeliveries();
      }, function (xhr) {
        notice($page.find('.smsgate-message'), errorText(xhr), true);
        $page.find('.smsgate-routes').empty();
      });
    }

    // The automations' and lists' SMS by outcome: their own module (activity.js).
    function renderActivity() {
      require([self.params.path + '/activity.js?v=' + encodeURIComponent(self.params.version || '')],
        function (activity) {
          activity.render({call: call, errorText: errorText, i18n: self.i18n, lang: lang(),
            $where: state.$page.find('.smsgate-activity')});
        });
    }

    // The owner's alerts and figures: their own module (figures.js), loaded beside this one.
    function renderFigures() {
      require([self.params.path + '/figures.js?v=' + encodeURIComponent(self.params.version || '')],
        function (figures) {
          state.figures = figures.render({call: call, i18n: self.i18n, lang: lang(), baseUrl: BASE_URL,
            version: self.params.version, isAdmin: canEdit(), $alerts: state.$page.find('.smsgate-alerts'),
            $figures: state.$page.find('.smsgate-figures')});
        });
    }

    function canEdit() {
      return state.account && state.account.is_admin;
    }

    function providerBySlug(slug) {
      for (var i = 0; i < state.providers.length; i++) {
        if (state.providers[i].slug === slug) {
          return state.providers[i];
        }
      }
      return null;
    }

    function renderAccount() {
      var account = state.account;
      var $box = state.$page.find('.smsgate-account').empty();
      $box.append(el('span', 'smsgate-muted', t('account') + ': '),
        el('strong', '', account.subdomain + '.' + account.domain));
      if (!account.is_admin) {
        $box.append(el('div', 'smsgate-notice', t('viewer_note')));
      }
    }

    function loadRoutes() {
      return call('GET', '/routes/').then(function (routes) {
        if (state.figures && state.routes.length + routes.length) {
          state.figures.refreshAlerts();  // a route added, changed or deleted changes the alerts
        }
        state.routes = routes;
        renderRoutes();
        renderForm(state.editing);
        renderTest();
      }, function (xhr) {
        notice(state.$page.find('.smsgate-message'), errorText(xhr), true);
      });
    }

    // --- routes table ------------------------------------------------------------------------
    function renderRoutes() {
      var $box = state.$page.find('.smsgate-routes').empty();
      if (!state.routes.length) {
        $box.append(el('p', 'smsgate-muted smsgate-no-routes', t('no_routes')));
        return;
      }
      var $table = el('table', 'smsgate-table smsgate-routes-table');
      $table.append(el('thead').append(el('tr').append(
        el('th', '', t('col_order')), el('th', '', t('col_provider')), el('th', '', t('col_sender')),
        el('th', '', t('col_state')), el('th', '', t('col_actions')))));
      var $body = el('tbody');
      $.each(state.routes, function (index, route) {
        $body.append(routeRow(route, index));
        if (route.callback_url) {
          $body.append(el('tr', 'smsgate-callback-row').append(el('td').attr('colspan', 5).append(
            el('label', 'smsgate-label', t('callback_url')),
            el('input', 'smsgate-input smsgate-callback-url').attr({type: 'text', readonly: 'readonly'})
              .val(route.callback_url).on('focus', function () { $(this).trigger('select'); }),
            el('div', 'smsgate-help', t('callback_help')))));
        }
      });
      $box.append($table.append($body));
    }

    function routeRow(route, index) {
      var health = route.health || {status: 'ok'};
      var $state = el('span', 'smsgate-badge smsgate-badge_' + health.status, t('state_' + health.status));
      if (health.reason) {
        $state.attr('title', health.reason);
      }
      var $actions = el('td', 'smsgate-actions');
      var $balance = el('span', 'smsgate-balance');
      if (canEdit()) {
        $actions.append(
          button('↑', 'smsgate-up', function () { move(index, -1); }).attr('title', t('move_up'))
            .prop('disabled', index === 0),
          button('↓', 'smsgate-down', function () { move(index, 1); }).attr('title', t('move_down'))
            .prop('disabled', index === state.routes.length - 1),
          button(t('edit'), 'smsgate-edit', function () { state.editing = route; renderForm(route); }),
          deleteButton(route)
        );
      }
      var provider = providerBySlug(route.provider);
      if (provider && provider.supports_balance) {
        $actions.append(button(t('balance'), 'smsgate-balance-button', function () {
          $balance.text(t('loading'));
          call('GET', '/routes/' + route.id + '/balance/').then(function (reply) {
            $balance.text(t('balance_value') + ' ' + reply.amount + ' ' + reply.currency);
          }, function (xhr) {
            $balance.text(errorText(xhr));
          });
        }));
      }
      $actions.append($balance);
      return el('tr', 'smsgate-route').attr('data-route-id', route.id).append(
        el('td', '', String(index + 1)),
        el('td', 'smsgate-route-provider', route.provider_name),
        el('td', 'smsgate-route-sender', route.sender),
        el('td').append($state),
        $actions
      );
    }

    function deleteButton(route) {
      var armed = false;
      var $button = button(t('delete'), 'smsgate-delete', function () {
        if (!armed) {  // a second click deletes (amoCRM forbids modal browser dialogs)
          armed = true;
          $button.text(t('delete_confirm_hint'));
          return;
        }
        call('DELETE', '/routes/' + route.id + '/').then(function () {
          notice(state.$page.find('.smsgate-message'), t('deleted'));
          if (state.editing && state.editing.id === route.id) {
            state.editing = null;
          }
          loadRoutes();
        }, function (xhr) {
          notice(state.$page.find('.smsgate-message'), errorText(xhr), true);
        });
      });
      return $button;
    }

    function move(index, delta) {
      var ids = $.map(state.routes, function (route) { return route.id; });
      var target = index + delta;
      if (target < 0 || target >= ids.length) {
        return;
      }
      var moved = ids.splice(index, 1)[0];
      ids.splice(target, 0, moved);
      call('POST', '/routes/reorder/', {ids: ids}).then(function (routes) {
        state.routes = routes;
        renderRoutes();
        renderTest();
      }, function (xhr) {
        notice(state.$page.find('.smsgate-message'), errorText(xhr), true);
      });
    }

    // --- the route form, generated from the provider catalogue ------------------------------------
    function renderForm(route) {
      var $box = state.$page.find('.smsgate-form').empty();
      if (!canEdit()) {
        return;
      }
      var $form = el('form', 'smsgate-route-form').attr('novalidate', 'novalidate');
      $form.append(el('h3', 'smsgate-subtitle', t(route ? 'edit_route' : 'add_route')));
      var $provider = el('select', 'smsgate-input smsgate-provider').attr('name', 'provider');
      if (route) {
        $provider.append(el('option', '', route.provider_name).val(route.provider)).prop('disabled', true);
      } else {
        $provider.append(el('option', '', t('choose_provider')).val(''));
        $.each(state.providers, function (i, provider) {
          $provider.append(el('option', '', provider.name).val(provider.slug));
        });
      }
      var $fields = el('div', 'smsgate-credential-fields');
      $form.append(field(t('provider'), $provider), $fields);
      var $sender = el('input', 'smsgate-input smsgate-sender').attr({type: 'text', name: 'sender', maxlength: 20})
        .val(route ? route.sender : '');
      var $active = el('input', 'smsgate-active').attr({type: 'checkbox', name: 'is_active'})
        .prop('checked', route ? route.is_active : true);
      $form.append(field(t('sender'), $sender, t('sender_help')),
        el('label', 'smsgate-checkbox').append($active, ' ', el('span', '', t('active'))));
      var $formMessage = el('div', 'smsgate-form-message');
      var $buttons = el('div', 'smsgate-buttons').append(
        el('button', 'smsgate-button smsgate-button_primary smsgate-save', t('save')).attr('type', 'submit'));
      if (route) {
        $buttons.append(button(t('cancel'), 'smsgate-cancel', function () {
          state.editing = null;
          renderForm(null);
        }));
      }
      $form.append($formMessage, $buttons);

      function drawFields() {
        $fields.empty();
        var provider = providerBySlug($provider.val());
        if (!provider) {
          return;
        }
        $.each(provider.credential_fields, function (i, spec) {
          var $input = el('input', 'smsgate-input smsgate-credential')
            .attr({type: spec.secret ? 'password' : 'text', name: 'credential-' + spec.name, autocomplete: 'off'})
            .data('credential', spec.name);
          var isSet = route && spec.secret && route.secrets_set && route.secrets_set[spec.name];
          if (isSet) {
            $input.attr('placeholder', t('secret_saved'));
          } else if (spec.required) {
            $input.attr('placeholder', t('required'));
          }
          if (route && !spec.secret && route.public_credentials && route.public_credentials[spec.name]) {
            $input.val(route.public_credentials[spec.name]);
          }
          $fields.append(field(spec.label, $input, spec.help));
        });
      }

      $provider.on('change', drawFields);
      drawFields();
      $form.on('submit', function (event) {
        event.preventDefault();
        var credentials = {};
        $fields.find('.smsgate-credential').each(function () {
          credentials[$(this).data('credential')] = $(this).val();
        });
        var body = {sender: $sender.val(), is_active: $active.prop('checked'), credentials: credentials};
        var request;
        if (route) {
          request = call('PATCH', '/routes/' + route.id + '/', body);
        } else {
          body.provider = $provider.val();
          request = call('POST', '/routes/', body);
        }
        request.then(function () {
          state.editing = null;
          notice(state.$page.find('.smsgate-message'), t('saved'));
          loadRoutes();
        }, function (xhr) {
          notice($formMessage, errorText(xhr), true);
        });
      });
      $box.append($form);
    }

    function field(label, $input, help) {
      var $field = el('div', 'smsgate-field').append(el('label', 'smsgate-label', label), $input);
      if (help) {
        $field.append(el('div', 'smsgate-help', help));
      }
      return $field;
    }

    // --- test SMS --------------------------------------------------------------------------------
    function renderTest() {
      var $box = state.$page.find('.smsgate-test').empty();
      if (!canEdit() || !state.routes.length) {
        return;
      }
      var $phone = el('input', 'smsgate-input smsgate-test-phone').attr({type: 'tel', name: 'phone',
        placeholder: '+79123456789'});
      var $route = el('select', 'smsgate-input smsgate-test-route').attr('name', 'route');
      $.each(state.routes, function (i, route) {
        $route.append(el('option', '', route.provider_name + (route.sender ? ' (' + route.sender + ')' : ''))
          .val(route.id));
      });
      var $result = el('div', 'smsgate-test-result');
      $box.append(el('h3', 'smsgate-subtitle', t('test_title')), field(t('test_phone'), $phone),
        field(t('test_route'), $route),
        button(t('test_send'), 'smsgate-button_primary smsgate-test-send', function () {
          call('POST', '/routes/' + $route.val() + '/test-sms/', {phone: $phone.val()}).then(function () {
            notice($result, t('test_queued'));
            loadDeliveries(true);
          }, function (xhr) {
            notice($result, errorText(xhr), true);
          });
        }), $result);
    }

    // --- SMS templates ----------------------------------------------------------------------------
    function loadTemplates() {
      return call('GET', '/templates/').then(function (templates) {
        state.templates = templates;
        renderTemplates();
      }, function (xhr) {
        notice(state.$page.find('.smsgate-message'), errorText(xhr), true);
      });
    }

    // The text with its markers set off (as text nodes: nothing is parsed as HTML).
    function markedText(text) {
      var $node = el('span');
      $.each(String(text).split(/(\{\{[^{}]*\}\})/), function (i, piece) {
        if (piece) {
          $node.append(i % 2 ? el('span', 'smsgate-marker', piece) : document.createTextNode(piece));
        }
      });
      return $node;
    }

    function renderTemplates() {
      var $box = state.$page.find('.smsgate-templates').empty();
      $box.append(el('h3', 'smsgate-subtitle', tt('title')), el('p', 'smsgate-muted', tt('intro')));
      if (!state.templates.length) {
        $box.append(el('p', 'smsgate-muted smsgate-no-templates', tt('none')));
      } else {
        var $head = el('tr').append(el('th', '', tt('col_name')), el('th', '', tt('col_text')),
          el('th', '', t('col_state')));
        if (canEdit()) {
          $head.append(el('th', '', t('col_actions')));
        }
        var $body = el('tbody');
        $.each(state.templates, function (i, template) {
          $body.append(templateRow(template));
        });
        $box.append(el('table', 'smsgate-table smsgate-templates-table').append(el('thead').append($head), $body));
      }
      $box.append(el('div', 'smsgate-template-message'), el('div', 'smsgate-template-form'));
      renderTemplateForm(state.editingTemplate);
    }

    function templateRow(template) {
      var $row = el('tr', 'smsgate-template').attr('data-template-id', template.id).append(
        el('td', 'smsgate-template-name', template.name),
        el('td', 'smsgate-template-text').append(markedText(template.text)),
        el('td').append(el('span', 'smsgate-badge' + (template.is_active ? ' smsgate-badge_ok' : ''),
          tt(template.is_active ? 'state_active' : 'state_inactive'))));
      if (canEdit()) {
        $row.append(el('td', 'smsgate-actions').append(
          button(t('edit'), 'smsgate-template-edit', function () {
            state.editingTemplate = template;
            state.$page.find('.smsgate-template-message').empty();
            renderTemplateForm(template);
            state.$page.find('.smsgate-template-name-input').trigger('focus');
          }),
          templateDeleteButton(template)));
      }
      return $row;
    }

    function templateDeleteButton(template) {
      var armed = false;
      var $button = button(t('delete'), 'smsgate-template-delete', function () {
        if (!armed) {  // a second click deletes (amoCRM forbids modal browser dialogs)
          armed = true;
          $button.text(t('delete_confirm_hint'));
          return;
        }
        call('DELETE', '/templates/' + template.id + '/').then(function () {
          if (state.editingTemplate && state.editingTemplate.id === template.id) {
            state.editingTemplate = null;
          }
          loadTemplates().then(function () {
            notice(state.$page.find('.smsgate-template-message'), tt('deleted'));
          });
        }, function (xhr) {
          notice(state.$page.find('.smsgate-template-message'), errorText(xhr), true);
        });
      });
      return $button;
    }

    function markerPicker() {
      var $picker = el('select', 'smsgate-input smsgate-marker-picker').attr('name', 'marker');
      $picker.append(el('option', '', tt('choose_marker')).val(''));
      var groups = {};
      $.each(state.markers, function (i, marker) {
        if (!groups[marker.group]) {
          groups[marker.group] = el('optgroup').attr('label', marker.group_label).appendTo($picker);
        }
        groups[marker.group].append(el('option', '', marker.label + ' — ' + marker.marker).val(marker.key)
          .attr('data-needs-field-id', marker.needs_field_id ? '1' : ''));
      });
      return $picker;
    }

    function insertAtCursor($textarea, snippet) {
      var node = $textarea.get(0);
      var value = $textarea.val();
      var start = typeof node.selectionStart === 'number' ? node.selectionStart : value.length;
      var end = typeof node.selectionEnd === 'number' ? node.selectionEnd : value.length;
      $textarea.val(value.slice(0, start) + snippet + value.slice(end));
      node.selectionStart = node.selectionEnd = start + snippet.length;
      $textarea.trigger('focus').trigger('input');
    }

    function renderTemplateForm(template) {
      var $box = state.$page.find('.smsgate-template-form').empty();
      state.$page.find('.smsgate-template').removeClass('smsgate-template_editing');
      if (template) {
        state.$page.find('.smsgate-template[data-template-id="' + template.id + '"]')
          .addClass('smsgate-template_editing');
      }
      if (!canEdit()) {
        return;
      }
      var $form = el('form', 'smsgate-template-editor').attr('novalidate', 'novalidate');
      var $name = el('input', 'smsgate-input smsgate-template-name-input')
        .attr({type: 'text', name: 'name', maxlength: 100}).val(template ? template.name : '');
      var $text = el('textarea', 'smsgate-input smsgate-template-text-input')
        .attr({name: 'text', rows: 5, maxlength: 1000}).val(template ? template.text : '');
      var $picker = markerPicker();
      var $fieldId = el('input', 'smsgate-input smsgate-marker-field-id')
        .attr({type: 'text', inputmode: 'numeric', name: 'field_id', placeholder: tt('field_id')}).hide();
      var $counter = el('div', 'smsgate-template-counter');
      var $problems = el('div', 'smsgate-template-problems');
      var $active = el('input', 'smsgate-template-active').attr({type: 'checkbox', name: 'is_active'})
        .prop('checked', template ? template.is_active : true);
      var $formMessage = el('div', 'smsgate-template-form-message');

      $picker.on('change', function () {
        $fieldId.toggle($picker.find('option:selected').attr('data-needs-field-id') === '1');
      });
      var $insert = button(tt('insert'), 'smsgate-marker-insert', function () {
        var key = $picker.val();
        if (!key) {
          return;
        }
        var marker = '{{' + key + '}}';
        if ($picker.find('option:selected').attr('data-needs-field-id') === '1') {
          var fieldId = $.trim($fieldId.val());
          if (!/^[1-9][0-9]{0,17}$/.test(fieldId)) {
            notice($problems, tt('field_id_needed'), true);
            $fieldId.trigger('focus');
            return;
          }
          marker = '{{' + key + '.' + fieldId + '}}';
        }
        insertAtCursor($text, marker);
      });

      $form.append(
        el('h3', 'smsgate-subtitle', tt(template ? 'edit_title' : 'add_title')),
        field(tt('name'), $name),
        field(tt('text'), $text, tt('text_help')),
        el('div', 'smsgate-field smsgate-marker-row').append(
          el('label', 'smsgate-label', tt('markers')), $picker, $fieldId, $insert,
          el('div', 'smsgate-help', tt('markers_help'))),
        $counter, $problems,
        el('label', 'smsgate-checkbox').append($active, ' ', el('span', '', tt('active'))),
        $formMessage,
        el('div', 'smsgate-buttons').append(
          el('button', 'smsgate-button smsgate-button_primary smsgate-template-save', t('save')).attr('type', 'submit'),
          template ? button(t('cancel'), 'smsgate-template-cancel', function () {
            state.editingTemplate = null;
            renderTemplateForm(null);
          }) : null));

      // The part counter and the marker check come from the server's preview, the one counter there is.
      var timer = null;
      var sequence = 0;
      function refreshCounter() {
        var mine = ++sequence;
        var text = $text.val();
        call('POST', '/templates/preview/', {text: text}).then(function (reply) {
          if (mine !== sequence) {
            return;  // a newer text is being counted
          }
          $counter.empty().append(el('span', 'smsgate-counter-figures', tt('counter', {
            length: reply.length, encoding: tt('encoding_' + reply.encoding), parts: reply.parts})));
          if (/\{\{/.test(text)) {
            $counter.append(el('span', 'smsgate-help smsgate-counter-note', ' ' + tt('counter_note')));
          }
          $problems.empty();
          $.each(reply.errors, function (i, error) {
            $problems.append(el('div', 'smsgate-notice smsgate-notice_error smsgate-marker-error', error.message));
          });
        }, function (xhr) {
          if (mine === sequence) {
            $counter.empty();
            notice($problems, errorText(xhr), true);
          }
        });
      }
      $text.on('input', function () {
        clearTimeout(timer);
        timer = setTimeout(refreshCounter, 300);
      });
      refreshCounter();

      $form.on('submit', function (event) {
        event.preventDefault();
        var body = {name: $name.val(), text: $text.val(), is_active: $active.prop('checked')};
        var request = template ? call('PATCH', '/templates/' + template.id + '/', body)
          : call('POST', '/templates/', body);
        request.then(function () {
          state.editingTemplate = null;
          loadTemplates().then(function () {
            notice(state.$page.find('.smsgate-template-message'), tt('saved'));
          });
        }, function (xhr) {
          notice($formMessage, errorText(xhr), true);
        });
      });
      $box.append($form);
    }

    // --- the pipeline action: its own module (pipeline.js) --------------------------------------------
    function renderPipeline() {
      loadPipeline(function (pipeline, shared) {
        pipeline.settingsSection(self, {call: call, errorText: errorText, picker: shared},
          state.$page.find('.smsgate-pipeline'));
      });
    }

    // --- latest deliveries -------------------------------------------------------------------------
    function renderDeliveries() {
      var $box = state.$page.find('.smsgate-deliveries').empty();
      var $status = el('select', 'smsgate-input smsgate-status-filter');
      $status.append(el('option', '', t('all_statuses')).val(''));
      $.each(STATUSES, function (i, status) {
        $status.append(el('option', '', statusText(status)).val(status));
      });
      $status.on('change', function () {
        state.status = $status.val();
        loadDeliveries(true);
      });
      $box.append(el('h3', 'smsgate-subtitle', t('deliveries_title')),
        el('div', 'smsgate-toolbar').append($status, button(t('refresh'), 'smsgate-refresh', function () {
          loadDeliveries(true);
        })),
        el('table', 'smsgate-table smsgate-deliveries-table').append(
          el('thead').append(el('tr').append(el('th', '', t('col_time')), el('th', '', t('col_phone')),
            el('th', '', t('col_status')), el('th', '', t('col_provider')), el('th', '', t('col_text')),
            el('th', '', t('col_error')))),
          el('tbody')),
        el('p', 'smsgate-muted smsgate-no-deliveries', t('no_deliveries')).hide(),
        button(t('more'), 'smsgate-more', function () { loadDeliveries(false); }).hide());
      loadDeliveries(true);
    }

    function loadDeliveries(fromStart) {
      var $box = state.$page.find('.smsgate-deliveries');
      var path = fromStart ? '/deliveries/?page_size=10' + (state.status ? '&status=' + state.status : '')
        : state.cursor.replace(/^.*\/api\/v1/, '');
      return call('GET', path).then(function (page) {
        var $body = $box.find('tbody');
        if (fromStart) {
          $body.empty();
        }
        $.each(page.results, function (i, delivery) {
          $body.append(deliveryRow(delivery));
        });
        state.cursor = page.next;
        $box.find('.smsgate-more').toggle(!!page.next);
        $box.find('.smsgate-no-deliveries').toggle(!$body.children().length);
      }, function (xhr) {
        notice(state.$page.find('.smsgate-message'), errorText(xhr), true);
      });
    }

    function deliveryRow(delivery) {
      var kind = delivery.kind === 'test' ? ' (' + t('kind_test') + ')' : '';
      return el('tr', 'smsgate-delivery').attr({'data-delivery-id': delivery.id, 'data-status': delivery.status})
        .append(
          el('td', '', formatTime(delivery.created_at)),
          el('td', 'smsgate-delivery-phone', delivery.phone),
          el('td').append(el('span', 'smsgate-badge smsgate-status_' + delivery.status,
            statusText(delivery.status))),
          el('td', '', delivery.provider + kind),
          el('td', 'smsgate-delivery-text', delivery.text),
          el('td', 'smsgate-muted', delivery.error_text || delivery.error_class || '')
        );
    }

    // --- the lead's and the contact's card: card.js, loaded there only --------------------------------
    var cardPanel = null;

    function inCard() {
      var area = (self.system() || {}).area;
      return area === 'lcard' || area === 'ccard';
    }

    function card() {
      if (!cardPanel) {
        cardPanel = new Promise(function (resolve, reject) {
          require([self.params.path + '/card.js?v=' + self.params.version], function (module) {
            resolve(module.create(self, {api: API}));
          }, reject);
        });
      }
      return cardPanel;
    }

    function loadStyles() {
      var href = self.params && self.params.path ? self.params.path + '/style.css?v=' + self.params.version : null;
      if (href && !$('link[href="' + href + '"]').length) {
        $('head').append($('<link>').attr({type: 'text/css', rel: 'stylesheet', href: href}));
      }
    }

    // The template picker and preview that pipeline.js and salesbot.js share: picker.js, loaded with them.
    function pickerPath() {
      return self.params.path + '/picker.js?v=' + encodeURIComponent(self.params.version || '');
    }

    function loadPipeline(then) {
      require([self.params.path + '/pipeline.js', pickerPath()], then);
    }

    var salesbot = null;  // salesbot.js, once loaded
    var picker = null;  // picker.js, loaded with it
    function loadSalesbot(then) {
      require([self.params.path + '/salesbot.js?v=' + encodeURIComponent(self.params.version || ''), pickerPath()],
        function (module, shared) {
          salesbot = module;
          picker = shared;
          if (then) {
            then(module);
          }
        });
    }

    // The selected items of a leads or contacts list: listsend.js's dialog.
    function openListSend(entityType) {
      var chosen = typeof self.list_selected === 'function' ? self.list_selected() || {} : {};
      var ids = $.map(chosen.selected || [], function (item) { return item && item.id; });
      loadStyles();
      require([self.params.path + '/listsend.js?v=' + encodeURIComponent(self.params.version || '')],
        function (module) {
          module.open(self, {call: call, errorText: errorText}, entityType, ids);
        });
      return true;
    }

    this.callbacks = {
      render: function () {
        if (inCard()) {
          loadStyles();
          card().then(function (panel) { panel.render(); });
        }
        return true;
      },
      init: function () {
        loadStyles();
        if (inCard() && typeof self.add_source === 'function') {
          // amoCRM's own SMS input in the card's feed: resolve once smsgate accepted the SMS (amoCRM
          // then writes the note), reject with the refusal's message.
          self.add_source('sms', function (params) {
            return card().then(function (panel) { return panel.sendFromFeed(params); });
          });
        }
        loadSalesbot();
        return true;
      },
      bind_actions: function () {
        return true;
      },
      settings: function ($modalBody) {
        var $root = $modalBody && $modalBody.jquery ? $modalBody : $($modalBody || document.body);
        loadStyles();
        console.debug('smsgate: settings page');
        renderPage($root);
        return true;
      },
      // The digital pipeline's "send SMS" action: its own module (pipeline.js) in the widget's folder.
      dpSettings: function ($body) {
        loadStyles();
        loadPipeline(function (pipeline, shared) {
          pipeline.dpSettings(self, {call: call, errorText: errorText, picker: shared},
            $body && $body.jquery ? $body : null);
        });
        return true;
      },
      // Salesbot's "send SMS" step: its own module (salesbot.js). Both callbacks answer at once.
      salesbotDesignerSettings: function ($body, renderRow, params) {
        loadStyles();
        var $where = $body && $body.jquery ? $body : $($body || document.body);
        if (salesbot) {
          return salesbot.settings(self, {call: call, errorText: errorText, picker: picker}, $where, params);
        }
        loadSalesbot(function (module) {
          module.settings(self, {call: call, errorText: errorText, picker: picker}, $where, params);
        });
        var texts = self.i18n('salesbot') || {};
        return {exits: [{code: 'sent', title: texts.exit_sent}, {code: 'failed', title: texts.exit_failed}]};
      },
      onSalesbotDesignerSave: function (handlerCode, params) {
        return salesbot ? salesbot.botCode(BASE_URL, handlerCode, params, picker) : '';
      },
      leads: {
        selected: function () {
          return openListSend('leads');
        }
      },
      contacts: {
        selected: function () {
          return openListSend('contacts');
        }
      },
      onSave: function () {
        return true;
      },
      destroy: function () {
        if (cardPanel) {
          cardPanel.then(function (panel) { panel.destroy(); });
          cardPanel = null;
        }
        return true;
      }
    };
    return this;
  };
});
