/*
 * smsgate in amoCRM's lead and contact cards (locations lcard-1 and ccard-1).
 *
 * The panel in the card's right column: the card's contacts and their phones (amoCRM's own
 * get_current_card_contacts_data at once, then the card as smsgate reads it from amoCRM's API, which
 * is what the server checks a send against), a template or a free text, a live preview of what goes
 * out (the server's preview for this lead or contact: the text, its encoding and parts), a send
 * button, and the card's SMS history with statuses and full texts, refreshed while any SMS is in
 * flight. And amoCRM's own SMS input in the card's feed (add_source('sms')), sent through smsgate:
 * the promise resolves once smsgate accepted the SMS (amoCRM then writes the note itself) and
 * rejects with the refusal's message.
 *
 * Loaded by script.js (`require([params.path + '/card.js'])`) only in the card locations. Every call
 * goes to the smsgate API through the widget's $authorizedAjax; nothing from the server or from amoCRM
 * is ever parsed as HTML.
 */
define(['jquery'], function ($) {
  'use strict';

  var POLL_MS = 3000;  // the history while an SMS is in flight
  var PREVIEW_DELAY_MS = 350;  // typing: one preview after a pause, not one per key
  var FINAL = ['delivered', 'undelivered', 'expired', 'rejected', 'failed'];
  var PHONE_TYPES = ['MOB', 'WORK', 'WORKDD', 'HOME', 'FAX', 'OTHER'];

  function uuid4() {
    var cryptoApi = window.crypto || window.msCrypto;
    if (cryptoApi && typeof cryptoApi.randomUUID === 'function') {
      return cryptoApi.randomUUID();
    }
    var bytes = new Uint8Array(16);
    if (cryptoApi && cryptoApi.getRandomValues) {
      cryptoApi.getRandomValues(bytes);
    } else {
      for (var i = 0; i < 16; i++) {
        bytes[i] = Math.floor(Math.random() * 256);
      }
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 0x100).toString(16).slice(1); }).join('');
    return hex.slice(0, 8) + '-' + hex.slice(8, 12) + '-' + hex.slice(12, 16) + '-' + hex.slice(16, 20) + '-' +
      hex.slice(20);
  }

  function digits(phone) {
    return String(phone === undefined || phone === null ? '' : phone).replace(/\D/g, '');
  }

  // How a number reads (the value sent stays as the server gave it): +7 916 123-45-67 for Russia and
  // Kazakhstan, E.164 as it is elsewhere.
  function phoneText(phone) {
    var m = /^\+7(\d{3})(\d{3})(\d{2})(\d{2})$/.exec(String(phone || ''));
    return m ? '+7 ' + m[1] + ' ' + m[2] + '-' + m[3] + '-' + m[4] : String(phone || '');
  }

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

  function CardPanel(widget, options) {
    var self = this;
    var api = options.api;
    var state = {
      contacts: [], fromServer: false, templates: [], templateId: null, templateText: null, clientKey: uuid4(),
      sending: false, preview: null, previewKey: null, previewSequence: 0, previewTimer: null, pollTimer: null,
      historySequence: 0, history: null, destroyed: false
    };
    var $root = null;

    // --- texts ----------------------------------------------------------------------------------------
    function t(key, values) {
      var texts = widget.i18n('card') || {};
      var text = texts[key] || key;
      Object.keys(values || {}).forEach(function (name) {
        text = text.split('{' + name + '}').join(String(values[name]));
      });
      return text;
    }

    function lang() {
      var meta = widget.i18n('meta') || {};
      return meta.lang || 'ru';
    }

    // The widget's own words for a status (the settings page's list says the same), else the server's.
    function statusText(send) {
      var texts = widget.i18n('statuses') || {};
      return texts[send.status] || send.status_label || send.status;
    }

    function formatTime(iso) {
      if (!iso) {
        return '';
      }
      var date = new Date(iso);
      if (isNaN(date.getTime())) {
        return iso;
      }
      return date.toLocaleString(lang(), {day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit'});
    }

    // --- the card this panel is on --------------------------------------------------------------------
    function entity() {
      var app = window.APP || window.AMOCRM || {};
      var area = (widget.system() || {}).area;
      var type = area === 'ccard' ? 'contacts' : area === 'lcard' ? 'leads' : null;
      if (!type && typeof app.getBaseEntity === 'function') {
        type = app.getBaseEntity();
      }
      var card = app.data && app.data.current_card;
      var id = card ? parseInt(card.id, 10) : 0;
      return {type: type, id: id > 0 ? id : 0};
    }

    // --- the API --------------------------------------------------------------------------------------
    function call(method, path, body) {
      var request = {url: api + path, type: method, dataType: 'json', headers: {'Accept-Language': lang()}};
      if (body !== undefined) {
        request.contentType = 'application/json';
        request.data = JSON.stringify(body);
      }
      return widget.$authorizedAjax(request);
    }

    function errorText(xhr) {
      var body = xhr && xhr.responseJSON;
      if (!body || typeof body !== 'object') {
        return t(xhr && xhr.status ? 'error_generic' : 'error_network');
      }
      var parts = [body.detail || t('error_generic')];
      if (body.errors && typeof body.errors === 'object') {
        Object.keys(body.errors).forEach(function (field) {
          var messages = $.isArray(body.errors[field]) ? body.errors[field] : [body.errors[field]];
          messages.forEach(function (message) {
            var text = typeof message === 'string' ? message : JSON.stringify(message);
            if (parts.indexOf(text) < 0) {
              parts.push(text);
            }
          });
        });
      }
      return parts.join(' ');
    }

    // A definite answer (the request was judged): a retry would be another message. No answer, or the
    // server or amoCRM down: the same message again, under the same key, so it is sent at most once.
    function judged(xhr) {
      return xhr && xhr.status >= 400 && xhr.status < 500 && xhr.status !== 408;
    }

    // --- the panel ------------------------------------------------------------------------------------
    function notice($where, text, kind) {
      $where.empty();
      if (text) {
        $where.append(el('div', 'smsgate-card-notice smsgate-card-notice_' + (kind || 'info'), text));
      }
    }

    function render() {
      var markup = '<div class="smsgate-card"></div>';
      if (typeof widget.render_template === 'function') {
        widget.render_template({caption: {class_name: 'smsgate-card-caption'}, body: '', render: markup});
      }
      $root = $('.smsgate-card').last();
      if (!$root.length) {
        return false;
      }
      $root.attr('lang', lang());
      var card = entity();
      $root.empty().append(
        el('div', 'smsgate-card-title', t('title')),
        el('div', 'smsgate-card-message'));
      if (!card.type || !card.id) {
        notice($root.find('.smsgate-card-message'), t('new_card'), 'info');
        return true;
      }
      $root.attr({'data-entity-type': card.type, 'data-entity-id': card.id});
      $root.append(composer(), historyBox());
      loadContacts(card);
      loadTemplates();
      loadHistory();
      return true;
    }

    function composer() {
      var key = uuid4();  // labels point at their controls
      var ids = {phone: 'smsgate-phone-' + key, template: 'smsgate-template-' + key, text: 'smsgate-text-' + key};
      var $phone = el('select', 'smsgate-card-input smsgate-card-phone').attr({name: 'phone', id: ids.phone})
        .append(el('option', '', t('loading')).val(''));
      var $template = el('select', 'smsgate-card-input smsgate-card-template')
        .attr({name: 'template', id: ids.template})
        .append(el('option', '', t('no_template')).val(''));
      var $text = el('textarea', 'smsgate-card-input smsgate-card-text')
        .attr({name: 'text', id: ids.text, rows: 4, placeholder: t('text_placeholder')});
      var $send = el('button', 'smsgate-card-button smsgate-card-send', t('send')).attr('type', 'button');

      $phone.on('change', function () {
        showRecipient();
        changed(true);  // another recipient: {{contact.*}} is theirs
      });
      $template.on('change', function () {
        var id = parseInt($template.val(), 10);
        var template = null;
        state.templates.forEach(function (item) {
          if (item.id === id) {
            template = item;
          }
        });
        state.templateId = template ? template.id : null;
        state.templateText = template ? template.text : null;
        $text.val(template ? template.text : '');
        changed(true);
      });
      $text.on('input', function () {
        changed(false);
      });
      $send.on('click', send);

      return el('div', 'smsgate-card-compose').append(
        el('label', 'smsgate-card-label', t('to')).attr('for', ids.phone), $phone,
        el('div', 'smsgate-card-recipient').hide(),
        el('div', 'smsgate-card-phones-note'),
        el('label', 'smsgate-card-label', t('template')).attr('for', ids.template), $template,
        el('label', 'smsgate-card-label', t('text')).attr('for', ids.text), $text,
        el('div', 'smsgate-card-preview').hide().append(
          el('div', 'smsgate-card-preview-label', t('preview')),
          el('div', 'smsgate-card-preview-text'),
          el('div', 'smsgate-card-counter'),
          el('div', 'smsgate-card-warnings')),
        el('div', 'smsgate-card-actions').append($send),
        el('div', 'smsgate-card-result'));
    }

    function historyBox() {
      var $refresh = el('button', 'smsgate-card-link smsgate-card-refresh', t('refresh')).attr('type', 'button')
        .on('click', function () { loadHistory(); });
      return el('div', 'smsgate-card-history').append(
        el('div', 'smsgate-card-history-head').append(el('span', 'smsgate-card-subtitle', t('history')), $refresh),
        el('div', 'smsgate-card-history-message'),
        el('ul', 'smsgate-card-sends'),
        el('div', 'smsgate-card-muted smsgate-card-no-sends', t('no_history')).hide());
    }

    // --- contacts and phones --------------------------------------------------------------------------
    function phoneValue(phone) {
      if (phone && typeof phone === 'object') {
        return {phone: String(phone.phone || phone.value || ''),
          type: phone.type || phone.enum_code || phone.enum || ''};
      }
      return {phone: String(phone === undefined || phone === null ? '' : phone), type: ''};
    }

    function contactsFromPage(contacts) {
      return $.map(contacts || [], function (contact) {
        var name = contact.name || $.trim((contact.first_name || '') + ' ' + (contact.last_name || ''));
        return {id: contact.id, name: name, is_main: !!contact.is_main,
          phones: $.map(contact.phones || [], phoneValue)};
      });
    }

    function loadContacts(card) {
      var local = typeof widget.get_current_card_contacts_data === 'function'
        ? widget.get_current_card_contacts_data() : null;
      if (local && typeof local.then === 'function') {
        local.then(function (contacts) {
          if (!state.fromServer && !state.destroyed) {
            $root.attr('data-phones-from', 'page');
            drawPhones(contactsFromPage(contacts));
          }
        });
      }
      call('GET', '/crm/cards/' + card.type + '/' + card.id + '/').then(function (reply) {
        state.fromServer = true;
        $root.attr('data-phones-from', 'amocrm');
        drawPhones(reply.contacts || []);
        notice($root.find('.smsgate-card-phones-note'), '');
      }, function (xhr) {
        var text = xhr && xhr.status === 404 ? errorText(xhr) : t('card_unavailable') + ' ' + errorText(xhr);
        notice($root.find('.smsgate-card-phones-note'), text, 'warning');
        if (!state.contacts.length) {
          drawPhones([]);
        }
      });
    }

    function drawPhones(contacts) {
      state.contacts = contacts;
      var $phone = $root.find('.smsgate-card-phone');
      var previous = digits($phone.val());
      var best = null;
      $phone.empty();
      var ordered = contacts.slice().sort(function (a, b) { return (b.is_main ? 1 : 0) - (a.is_main ? 1 : 0); });
      ordered.forEach(function (contact) {
        if (!contact.phones || !contact.phones.length) {
          return;
        }
        var label = (contact.name || t('no_name')) + (contact.is_main ? ' · ' + t('main_contact') : '');
        var $group = el('optgroup').attr('label', label);
        contact.phones.forEach(function (phone) {
          var type = PHONE_TYPES.indexOf(phone.type) >= 0 ? ' · ' + t('phone_' + phone.type) : '';
          var $option = el('option', '', phoneText(phone.phone) + type).val(phone.phone)
            .attr({'data-contact-id': contact.id, 'data-contact-name': label});
          $group.append($option);
          if (best === null || (previous && digits(phone.phone) === previous)) {
            best = phone.phone;
          }
        });
        $phone.append($group);
      });
      if (best === null) {
        $phone.append(el('option', '', t('no_phones')).val(''));
        $phone.prop('disabled', true);
      } else {
        $phone.prop('disabled', false).val(best);
      }
      showRecipient();
      if (state.history) {
        drawHistory();  // the contacts' names beside the numbers
      }
      if (digits(best) !== previous && $root.find('.smsgate-card-text').val()) {
        changed(true);  // another recipient now: preview again
      }
      updateSend();
    }

    // Whose number it is: the select shows only the number once closed.
    function showRecipient() {
      var name = $root.find('.smsgate-card-phone option:selected').attr('data-contact-name') || '';
      $root.find('.smsgate-card-recipient').text(name).toggle(!!name);
    }

    function contactNameOf(phone) {
      var found = '';
      state.contacts.forEach(function (contact) {
        (contact.phones || []).forEach(function (item) {
          if (!found && digits(item.phone) === digits(phone)) {
            found = contact.name || '';
          }
        });
      });
      return found;
    }

    // --- templates ------------------------------------------------------------------------------------
    function loadTemplates() {
      call('GET', '/templates/').then(function (templates) {
        state.templates = $.grep(templates || [], function (item) { return item.is_active; });
        var $template = $root.find('.smsgate-card-template');
        $template.find('option[value!=""]').remove();
        state.templates.forEach(function (item) {
          $template.append(el('option', '', item.name).val(String(item.id)));
        });
        $template.prop('disabled', !state.templates.length);
      }, function (xhr) {
        notice($root.find('.smsgate-card-result'), errorText(xhr), 'error');
      });
    }

    // --- the message and its preview ------------------------------------------------------------------
    // The template as it is: sent by id (the server fills it in and records it); edited: as text.
    function message() {
      var text = $root.find('.smsgate-card-text').val() || '';
      if (state.templateId && text === state.templateText) {
        return {template_id: state.templateId};
      }
      return {text: text};
    }

    function changed(immediately) {
      state.clientKey = uuid4();  // another message: another key
      notice($root.find('.smsgate-card-result'), '');
      updateSend();
      clearTimeout(state.previewTimer);
      state.previewTimer = setTimeout(refreshPreview, immediately ? 0 : PREVIEW_DELAY_MS);
    }

    function refreshPreview() {
      var card = entity();
      var body = $.extend({entity_type: card.type, entity_id: card.id}, message());
      var phone = $root.find('.smsgate-card-phone').val();
      if (phone) {
        body.phone = phone;  // the recipient's contact fills {{contact.*}}, as when it is sent
      }
      var key = JSON.stringify(body);
      var $preview = $root.find('.smsgate-card-preview');
      if (body.text === '') {
        state.preview = null;
        state.previewKey = key;
        $preview.hide();
        updateSend();
        return $.Deferred().resolve(null).promise();
      }
      var mine = ++state.previewSequence;
      $preview.addClass('smsgate-card-preview_loading');
      return call('POST', '/templates/preview/', body).then(function (reply) {
        if (mine !== state.previewSequence || state.destroyed) {
          return reply;  // a newer text is being previewed
        }
        state.preview = reply;
        state.previewKey = key;
        drawPreview(reply);
        updateSend();
        return reply;
      }, function (xhr) {
        if (mine === state.previewSequence) {
          $preview.removeClass('smsgate-card-preview_loading').show();
          $preview.find('.smsgate-card-preview-text, .smsgate-card-counter').empty();
          notice($preview.find('.smsgate-card-warnings'), errorText(xhr), 'error');
        }
      });
    }

    function drawPreview(reply) {
      var $preview = $root.find('.smsgate-card-preview').removeClass('smsgate-card-preview_loading').show();
      $preview.find('.smsgate-card-preview-text').text(reply.text);
      $preview.find('.smsgate-card-counter').text(t('counter', {
        length: reply.length, encoding: t('encoding_' + reply.encoding), parts: reply.parts}));
      var $warnings = $preview.find('.smsgate-card-warnings').empty();
      function warn(text, kind) {
        $warnings.append(el('div', 'smsgate-card-notice smsgate-card-notice_' + kind, text));
      }
      (reply.errors || []).forEach(function (error) {
        warn(error.message, 'error');
      });
      if (reply.missing && reply.missing.length) {
        warn(t('missing', {markers: $.map(reply.missing, function (m) { return '{{' + m + '}}'; }).join(', ')}),
          'warning');
      }
      if (reply.ucs2_from && reply.ucs2_from.length) {
        warn(t('ucs2_from', {markers: $.map(reply.ucs2_from, function (m) { return '{{' + m + '}}'; }).join(', ')}),
          'warning');
      }
      if (reply.too_long) {
        warn(t('too_long', {max: reply.max_length}), 'error');
      }
    }

    function updateSend() {
      if (!$root) {
        return;
      }
      var $send = $root.find('.smsgate-card-send');
      var text = $root.find('.smsgate-card-text').val() || '';
      var phone = $root.find('.smsgate-card-phone').val();
      var blocked = state.preview && (state.preview.too_long || (state.preview.errors || []).length);
      $send.prop('disabled', state.sending || !phone || !$.trim(text) || !!blocked);
      $send.text(state.sending ? t('sending') : t('send'));
      $root.toggleClass('smsgate-card_sending', state.sending);
    }

    // --- sending from the panel -----------------------------------------------------------------------
    function send() {
      if (state.sending) {
        return;  // the button is disabled; a second click that got through still sends once
      }
      var $result = $root.find('.smsgate-card-result');
      var phone = $root.find('.smsgate-card-phone').val();
      var text = $root.find('.smsgate-card-text').val() || '';
      if (!phone) {
        notice($result, t('no_phone'), 'error');
        return;
      }
      if (!$.trim(text)) {
        notice($result, t('empty_text'), 'error');
        return;
      }
      var card = entity();
      var body = $.extend({entity_type: card.type, entity_id: card.id, phone: phone, origin: 'panel',
        client_key: state.clientKey}, message());
      state.sending = true;
      updateSend();
      notice($result, '');
      // The server fills in the markers for this card, as its preview does.
      call('POST', '/crm/sends/', body).then(function (reply) {
        state.sending = false;
        state.clientKey = uuid4();
        state.templateId = null;
        state.templateText = null;
        $root.find('.smsgate-card-template').val('');
        $root.find('.smsgate-card-text').val('');
        $root.find('.smsgate-card-preview').hide();
        state.preview = null;
        notice($result, t('accepted', {phone: phoneText(reply.phone || phone)}), 'success');
        updateSend();
        prependSend(reply);
        loadHistory();
      }, function (xhr) {
        state.sending = false;
        if (judged(xhr)) {
          state.clientKey = uuid4();
        }
        notice($result, errorText(xhr), 'error');
        updateSend();
      });
    }

    // --- amoCRM's SMS input in the feed ----------------------------------------------------------------
    // amoCRM gives {phone, message, contact_id}; phone may be a number (75555555555). The card's own
    // spelling of that number when it has one (the contact's first); else digits as an international
    // number, unless they read as a national one (8 912 ...), which the server reads as amoCRM's country.
    function feedPhone(raw, contactId) {
      var wanted = digits(raw);
      var found = null;
      state.contacts.forEach(function (contact) {
        (contact.phones || []).forEach(function (item) {
          if (digits(item.phone) === wanted && (found === null || String(contact.id) === String(contactId))) {
            found = item.phone;
          }
        });
      });
      if (found !== null) {
        return found;
      }
      return typeof raw === 'number' && wanted.charAt(0) !== '8' ? '+' + wanted : String(raw || '');
    }

    this.sendFromFeed = function (params) {
      params = params || {};
      return new Promise(function (resolve, reject) {
        var card = entity();
        if (!card.type || !card.id) {
          reject(new Error(t('new_card')));
          return;
        }
        var phone = feedPhone(params.phone, params.contact_id);
        var body = {entity_type: card.type, entity_id: card.id, phone: phone, text: String(params.message || ''),
          origin: 'feed', client_key: uuid4()};
        call('POST', '/crm/sends/', body).then(function (reply) {
          if ($root) {
            prependSend(reply);
            loadHistory();
          }
          resolve(reply);
        }, function (xhr) {
          var text = errorText(xhr);
          if ($root) {
            notice($root.find('.smsgate-card-message'), t('feed_refused', {reason: text}), 'error');
          }
          reject(new Error(text));
        });
      });
    };

    // --- the card's SMS history -----------------------------------------------------------------------
    function sendItem(item) {
      var $item = el('li', 'smsgate-card-sms').attr({'data-id': item.id, 'data-status': item.status});
      var $head = el('div', 'smsgate-card-sms-head').append(
        el('span', 'smsgate-card-badge smsgate-card-status_' + item.status, statusText(item)),
        el('span', 'smsgate-card-sms-time', formatTime(item.created_at)));
      if (item.origin === 'feed') {
        $head.append(el('span', 'smsgate-card-sms-origin', t('from_feed')));
      }
      var who = contactNameOf(item.phone);
      $item.append($head, el('div', 'smsgate-card-sms-phone').append(who ? el('span', '', who + ' · ') : null,
        el('span', 'smsgate-card-nowrap', phoneText(item.phone))), el('div', 'smsgate-card-sms-text', item.text));
      var meta = [];
      if (item.parts) {
        meta.push(t('parts', {parts: item.parts}));
      }
      var sender = senderName(item.sent_by);
      if (sender) {
        meta.push(sender);
      }
      if (item.note_state === 'not_possible' || item.note_state === 'gave_up') {
        meta.push(t('no_note'));
      }
      if (meta.length) {
        $item.append(el('div', 'smsgate-card-sms-meta', meta.join(' · ')));
      }
      if (item.error_text) {
        $item.append(el('div', 'smsgate-card-sms-error', item.error_text));
      }
      return $item;
    }

    // Who sent it: "you", or the user's name as amoCRM's page knows its users (APP.constant('managers')).
    function senderName(userId) {
      if (userId === null || userId === undefined) {
        return '';
      }
      if (String(userId) === String((widget.system() || {}).amouser_id)) {
        return t('sent_by_you');
      }
      var app = window.APP || window.AMOCRM || {};
      var managers = typeof app.constant === 'function' ? app.constant('managers') : null;
      var user = managers && managers[userId];
      var name = user && (user.title || user.name);
      return name ? t('sent_by', {name: name}) : '';
    }

    function prependSend(item) {
      var $list = $root.find('.smsgate-card-sends');
      if (!$list.find('.smsgate-card-sms[data-id="' + item.id + '"]').length) {
        $list.prepend(sendItem(item));
      }
      $root.find('.smsgate-card-no-sends').hide();
    }

    function loadHistory() {
      var card = entity();
      clearTimeout(state.pollTimer);
      state.pollTimer = null;
      var mine = ++state.historySequence;
      var path = '/crm/sends/?entity_type=' + encodeURIComponent(card.type) + '&entity_id=' + card.id;
      return call('GET', path).then(function (reply) {
        if (mine !== state.historySequence || state.destroyed || !attached()) {
          return;
        }
        state.history = reply.results || [];
        drawHistory();
        notice($root.find('.smsgate-card-history-message'), '');
        var inFlight = reply.in_flight;
        if (inFlight === undefined) {
          inFlight = (reply.results || []).some(function (item) { return FINAL.indexOf(item.status) < 0; });
        }
        $root.toggleClass('smsgate-card_polling', !!inFlight);
        if (inFlight) {
          // A tab in the background asks less often; the next look at it catches up.
          state.pollTimer = setTimeout(loadHistory, document.hidden ? POLL_MS * 5 : POLL_MS);
        }
      }, function (xhr) {
        if (mine !== state.historySequence || state.destroyed || !attached()) {
          return;
        }
        notice($root.find('.smsgate-card-history-message'), errorText(xhr), 'error');
        $root.removeClass('smsgate-card_polling');
        if (!judged(xhr)) {
          state.pollTimer = setTimeout(loadHistory, POLL_MS * 3);  // amoCRM or smsgate down: try later
        }
      });
    }

    function drawHistory() {
      var $list = $root.find('.smsgate-card-sends').empty();
      (state.history || []).forEach(function (item) {
        $list.append(sendItem(item));
      });
      $root.find('.smsgate-card-no-sends').toggle(!$list.children().length);
    }

    function attached() {
      return $root && $.contains(document.documentElement, $root.get(0));
    }

    this.render = render;

    this.destroy = function () {
      state.destroyed = true;
      clearTimeout(state.pollTimer);
      clearTimeout(state.previewTimer);
      state.pollTimer = state.previewTimer = null;
    };

    this.isPolling = function () {
      return state.pollTimer !== null;
    };
  }

  return {
    create: function (widget, options) {
      return new CardPanel(widget, options);
    }
  };
});
