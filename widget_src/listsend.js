/*
 * smsgate: an SMS to each lead or contact selected in an amoCRM list (locations `llist`, `clist`; callbacks
 * `leads.selected`, `contacts.selected`). Loaded by script.js.
 *
 * A dialog: a template of the account or an own text, a preview (how many of the selected have a phone, the
 * first SMS, the parts in all, read by smsgate from amoCRM: POST /crm/list-sends/preview/), then the send in
 * the background (POST /crm/list-sends/, up to 500 recipients per send: a larger selection goes as several
 * sends), its progress (GET /crm/list-sends/<id>/ every POLL_MS) and a cancel button (POST .../cancel/).
 * Every SMS gets an sms_out note in amoCRM; the phone is picked as the pipeline action picks it.
 */
define(['jquery'], function ($) {
  'use strict';

  var ROOT_CLASS = 'smsgate-list';
  var PER_SEND = 500;
  var POLL_MS = 1500;

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

  function chunks(ids) {
    var out = [];
    for (var i = 0; i < ids.length; i += PER_SEND) {
      out.push(ids.slice(i, i + PER_SEND));
    }
    return out;
  }

  /*
   * widget: the widget instance (i18n); api: {call(method, path, body), errorText(xhr)} from script.js;
   * entityType: 'leads' | 'contacts'; ids: the selected items' ids.
   */
  function open(widget, api, entityType, ids) {
    var all = widget.i18n('lists') || {};
    function t(key, values) {
      var text = all[key] || key;
      Object.keys(values || {}).forEach(function (name) {
        text = text.split('{' + name + '}').join(String(values[name]));
      });
      return text;
    }
    ids = $.grep($.map(ids || [], function (id) { return parseInt(id, 10); }), function (id) { return id > 0; });
    $('.' + ROOT_CLASS).remove();
    var $overlay = el('div', ROOT_CLASS + ' smsgate-list-overlay');
    var $dialog = el('div', 'smsgate-list-dialog').attr({role: 'dialog', 'aria-modal': 'true'});
    var $select = el('select', 'smsgate-input smsgate-list-template');
    var $text = el('textarea', 'smsgate-input smsgate-list-text').attr({rows: 3, maxlength: 2000});
    var $preview = el('div', 'smsgate-list-preview');
    var $progress = el('div', 'smsgate-list-progress');
    var $message = el('div', 'smsgate-list-message');
    var $send = el('button', 'smsgate-button smsgate-button_primary smsgate-list-send', t('send')).attr('type', 'button');
    var $cancel = el('button', 'smsgate-button smsgate-list-cancel', t('cancel')).attr('type', 'button').hide();
    var $close = el('button', 'smsgate-button smsgate-list-close', t('close')).attr('type', 'button');
    var parts = chunks(ids);
    $dialog.append(
      el('div', 'smsgate-list-title', t(entityType === 'contacts' ? 'title_contacts' : 'title_leads',
        {count: ids.length})),
      parts.length > 1 ? el('div', 'smsgate-notice smsgate-list-split', t('split', {count: ids.length,
        sends: parts.length, per: PER_SEND})) : null,
      el('label', 'smsgate-label', t('template')), $select,
      el('label', 'smsgate-label smsgate-list-text-label', t('text')), $text,
      el('div', 'smsgate-label', t('preview')), $preview, $message, $progress,
      el('div', 'smsgate-list-buttons').append($send, $cancel, $close));
    $overlay.append($dialog);
    $('body').append($overlay);

    var sends = [];  // [{id, ...}] as the API answers
    var timer = null;
    var sequence = 0;
    var previewTimer = null;

    function body(extra) {
      var chosen = $select.val();
      var out = {entity_type: entityType};
      if (chosen) {
        out.template_id = parseInt(chosen, 10);
      } else {
        out.text = $text.val() || '';
      }
      return $.extend(out, extra);
    }

    function refresh() {
      var mine = ++sequence;
      if (!$select.val() && !$.trim($text.val() || '')) {
        $preview.empty().append(el('span', 'smsgate-muted', t('empty')));
        return;
      }
      $preview.empty().append(el('span', 'smsgate-muted', t('reading')));
      api.call('POST', '/crm/list-sends/preview/', body({ids: parts[0] || []})).then(function (reply) {
        if (mine !== sequence) {
          return;
        }
        $preview.empty().append(
          el('div', 'smsgate-list-counts', t('counts', {with_phone: reply.with_phone, total: reply.total})),
          reply.without_phone ? el('div', 'smsgate-help smsgate-list-no-phone',
            t('no_phone', {count: reply.without_phone})) : null,
          reply.not_found ? el('div', 'smsgate-help', t('not_found', {count: reply.not_found})) : null,
          el('div', 'smsgate-help smsgate-list-parts', t('parts', {parts: reply.parts})));
        if (parts.length > 1) {
          $preview.append(el('div', 'smsgate-help', t('preview_first', {per: PER_SEND})));
        }
        var $samples = el('ul', 'smsgate-list-samples');
        $.each(reply.samples || [], function (i, sample) {
          $samples.append(el('li', '').append(
            el('div', 'smsgate-list-sample-to', sample.name + ' · ' + sample.phone),
            el('div', 'smsgate-list-sample-text', sample.text)));
        });
        $preview.append($samples);
      }, function (xhr) {
        if (mine === sequence) {
          $preview.empty().append(el('div', 'smsgate-notice smsgate-notice_error', api.errorText(xhr)));
        }
      });
    }

    function showProgress() {
      var total = 0;
      var done = 0;
      var sent = 0;
      var noPhone = 0;
      var refused = 0;
      var open = false;
      var cancelled = false;
      $.each(sends, function (i, send) {
        total += send.total;
        done += send.done;
        sent += send.sent;
        noPhone += send.no_phone + send.not_found;
        refused += send.refused;
        open = open || send.state === 'pending' || send.state === 'running';
        cancelled = cancelled || send.state === 'cancelled';
      });
      var percent = total ? Math.round(100 * done / total) : 0;
      $progress.empty().append(
        el('div', 'smsgate-list-bar').append(el('div', 'smsgate-list-bar-fill').css('width', percent + '%')),
        el('div', 'smsgate-list-status', t(open ? 'progress' : (cancelled ? 'cancelled' : 'finished'),
          {done: done, total: total})),
        el('div', 'smsgate-help smsgate-list-outcome', t('outcome', {sent: sent, no_phone: noPhone,
          refused: refused})));
      $cancel.toggle(open);
      return open;
    }

    function poll() {
      clearTimeout(timer);
      $.when.apply($, $.map(sends, function (send) {
        return api.call('GET', '/crm/list-sends/' + send.id + '/');
      })).then(function () {
        var replies = sends.length === 1 ? [arguments] : arguments;
        sends = $.map(replies, function (reply) { return reply[0]; });
        if (showProgress()) {
          timer = setTimeout(poll, POLL_MS);
        }
      }, function (xhr) {
        notice(api.errorText(xhr));
        timer = setTimeout(poll, POLL_MS * 2);
      });
    }

    function notice(text) {
      $message.empty().append(el('div', 'smsgate-notice smsgate-notice_error', text));
    }

    $send.on('click', function () {
      $message.empty();
      $send.prop('disabled', true);
      $select.prop('disabled', true);
      $text.prop('disabled', true);
      var created = [];
      // One send after the other: each of up to 500 recipients.
      parts.reduce(function (previous, chunk) {
        return previous.then(function () {
          return api.call('POST', '/crm/list-sends/', body({ids: chunk})).then(function (send) {
            created.push(send);
          });
        });
      }, $.Deferred().resolve().promise()).then(function () {
        sends = created;
        showProgress();
        timer = setTimeout(poll, POLL_MS);
      }, function (xhr) {
        notice(api.errorText(xhr));
        sends = created;
        if (created.length) {
          showProgress();
          timer = setTimeout(poll, POLL_MS);
        } else {
          $send.prop('disabled', false);
          $select.prop('disabled', false);
          $text.prop('disabled', false);
        }
      });
    });

    $cancel.on('click', function () {
      $cancel.prop('disabled', true);
      $.when.apply($, $.map(sends, function (send) {
        return api.call('POST', '/crm/list-sends/' + send.id + '/cancel/');
      })).always(function () {
        $cancel.prop('disabled', false);
        poll();
      });
    });

    $close.on('click', function () {
      clearTimeout(timer);
      $overlay.remove();
    });

    $select.on('change', function () {
      var own = !$select.val();
      $text.toggle(own);
      $dialog.find('.smsgate-list-text-label').toggle(own);
      refresh();
    });
    $text.on('input', function () {
      clearTimeout(previewTimer);
      previewTimer = setTimeout(refresh, 400);
    });

    $select.append(el('option', '', t('loading')).val('')).prop('disabled', true);
    api.call('GET', '/templates/').then(function (templates) {
      $select.empty().append(el('option', '', t('own_text')).val(''));
      $.each(templates, function (i, template) {
        if (template.is_active) {
          $select.append(el('option', '', template.name).val(String(template.id)));
        }
      });
      $select.prop('disabled', false).trigger('change');
    }, function (xhr) {
      notice(api.errorText(xhr));
    });
    return $overlay;
  }

  return {open: open, PER_SEND: PER_SEND};
});
