/*
 * smsgate: Salesbot's "send SMS" step (location `salesbot_designer`, handler `send_sms`).
 *
 * amoCRM draws the step's settings from the manifest's `salesbot_designer.send_sms.settings` (text,
 * template_id) and calls `salesbotDesignerSettings($body, renderRow, params)`: this module adds a list of
 * the account's templates (or "my own text": the `text` field, whose markers such as {{lead.name}} the bot
 * fills in itself), a preview with the SMS parts, and names the step's two exits, "sent" and "failed".
 * `onSalesbotDesignerSave(handler_code, params)` returns the step's bot code: a `widget_request` to
 * smsgate's /amocrm/salesbot with the text and template, then a branch on what smsgate continues the bot
 * with ({{json.status}}): exit "sent" when the provider took the SMS, "failed" otherwise.
 * Loaded by script.js (its init preloads it; the Salesbot callbacks call it).
 */
define(['jquery'], function ($) {
  'use strict';

  var ROOT_CLASS = 'smsgate-bot';
  var HANDLER = 'send_sms';
  var EXITS = ['sent', 'failed'];

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

  function texts(widget) {
    var all = widget.i18n('salesbot') || {};
    return function (key, values) {
      var text = all[key] || key;
      Object.keys(values || {}).forEach(function (name) {
        text = text.split('{' + name + '}').join(String(values[name]));
      });
      return text;
    };
  }

  // A setting's input by its code: amoCRM names them `code` or `...[code]`.
  function settingInput($scope, code) {
    return $scope.find('input[name="' + code + '"], input[name$="[' + code + ']"], textarea[name="' + code +
      '"], textarea[name$="[' + code + ']"]').first();
  }

  var FIELD_WRAPPERS = ['.widget_settings_block__item_field', '.js-widget-settings__field', '.linked-form__field',
    '.control-wrapper', '.widget_settings_block__input_field'];
  function fieldOf($input) {
    for (var i = 0; i < FIELD_WRAPPERS.length; i++) {
      var $field = $input.closest(FIELD_WRAPPERS[i]);
      if ($field.length) {
        return $field;
      }
    }
    return $input;
  }

  function setValue($input, value) {
    $input.val(value === null || value === undefined ? '' : String(value)).trigger('input').trigger('change');
  }

  // The step's exits, as salesbotDesignerSettings returns them.
  function exits(widget) {
    var t = texts(widget);
    return {exits: EXITS.map(function (code) { return {code: code, title: t('exit_' + code)}; })};
  }

  // The template id as the step keeps it: ASCII digits, or nothing.
  function templateId(value) {
    var text = $.trim(String(value === null || value === undefined ? '' : value));
    return /^[1-9][0-9]{0,17}$/.test(text) ? text : '';
  }

  /*
   * The step's bot code (onSalesbotDesignerSave): amoCRM's Salesbot JSON, one step whose question asks smsgate
   * (widget_request; the bot waits until smsgate continues it) and then goes to an exit by {{json.status}}.
   */
  function botCode(baseUrl, handlerCode, params) {
    params = params || {};
    var data = {text: String(params.text || ''), template_id: templateId(params.template_id)};
    var step = {
      question: [
        {handler: 'widget_request', params: {url: baseUrl + '/amocrm/salesbot', data: data}},
        {handler: 'conditions', params: {
          logic: 'and',
          conditions: [{term1: '{{json.status}}', term2: 'sent', operation: '='}],
          result: [{handler: 'exits', params: {value: 'sent'}}]
        }},
        {handler: 'exits', params: {value: 'failed'}}
      ],
      require: []
    };
    return JSON.stringify([step]);
  }

  /*
   * widget: the widget instance (i18n); api: {call(method, path, body), errorText(xhr)} from script.js;
   * $body: the step's settings as amoCRM drew them.
   */
  function settings(widget, api, $body) {
    var t = texts(widget);
    var $scope = $body && $body.length ? $body : $(document);
    var $text = settingInput($scope, 'text');
    var $template = settingInput($scope, 'template_id');
    $scope.find('.' + ROOT_CLASS).remove();
    if ($template.length) {
      fieldOf($template).hide();
    }
    var $root = el('div', ROOT_CLASS + ' smsgate-bot-choice');
    var $after = el('div', ROOT_CLASS + ' smsgate-bot-outcome');
    var $select = el('select', 'smsgate-input smsgate-bot-template').attr('name', 'smsgate_bot_template');
    var $templateNote = el('div', 'smsgate-bot-template-note');
    var $preview = el('div', 'smsgate-bot-preview');
    var $problems = el('div', 'smsgate-bot-problems');
    $root.append(
      el('div', 'smsgate-dp-title', t('heading')),
      el('label', 'smsgate-label', t('choose')), $select, $templateNote,
      el('div', 'smsgate-help', t('choose_help')));
    $after.append(
      el('div', 'smsgate-label', t('preview')), $preview, $problems,
      el('div', 'smsgate-label', t('exits_title')),
      el('ul', 'smsgate-bot-exits').append(
        el('li', '', t('exit_sent_help')), el('li', '', t('exit_failed_help'))),
      el('div', 'smsgate-help', t('phone_help')));
    if ($text.length) {
      fieldOf($text).before($root).after($after);
    } else {
      $scope.append($root, $after);
    }

    var timer = null;
    var sequence = 0;
    function refresh() {
      var mine = ++sequence;
      var chosen = $select.val();
      var body = chosen ? {template_id: parseInt(chosen, 10)} : {text: $text.val() || ''};
      if (!chosen && !$.trim(body.text)) {
        $preview.empty().append(el('span', 'smsgate-muted', t('empty')));
        $problems.empty();
        return;
      }
      api.call('POST', '/templates/preview/', body).then(function (reply) {
        if (mine !== sequence) {
          return;
        }
        $preview.empty().append(
          el('div', 'smsgate-bot-preview-text', reply.text),
          el('div', 'smsgate-help smsgate-bot-counter', t('counter', {length: reply.length, parts: reply.parts,
            encoding: t('encoding_' + reply.encoding)})));
        if (reply.missing && reply.missing.length) {
          $preview.append(el('div', 'smsgate-help smsgate-bot-markers', t('markers_note')));
        }
        $problems.empty();
        $.each(reply.errors || [], function (i, error) {
          $problems.append(el('div', 'smsgate-notice smsgate-notice_error', error.message));
        });
      }, function (xhr) {
        if (mine === sequence) {
          $preview.empty();
          $problems.empty().append(el('div', 'smsgate-notice smsgate-notice_error', api.errorText(xhr)));
        }
      });
    }

    $select.append(el('option', '', t('loading')).val('')).prop('disabled', true);
    $select.on('change', function (event) {
      var chosen = $select.val();
      if (event.originalEvent) {
        $templateNote.empty();
      }
      if ($template.length) {
        setValue($template, chosen);
      }
      if ($text.length) {
        fieldOf($text).toggle(!chosen);
      }
      refresh();
    });
    $text.on('input.smsgateBot', function () {
      if (!$select.val()) {
        clearTimeout(timer);
        timer = setTimeout(refresh, 300);
      }
    });

    api.call('GET', '/templates/').then(function (templates) {
      $select.empty().append(el('option', '', t('own_text')).val(''));
      $.each(templates, function (i, template) {
        if (template.is_active) {
          $select.append(el('option', '', template.name).val(String(template.id)));
        }
      });
      var current = $template.length ? templateId($template.val()) : '';
      if (current && $select.find('option[value="' + current + '"]').length) {
        $select.val(current);
      } else if ($template.length && $.trim($template.val() || '')) {
        $templateNote.append(el('div', 'smsgate-notice smsgate-notice_error', t('template_gone')));
        setValue($template, '');
      }
      $select.prop('disabled', false).trigger('change');
    }, function (xhr) {
      $select.empty();
      $templateNote.append(el('div', 'smsgate-notice smsgate-notice_error', api.errorText(xhr)));
    });
    return exits(widget);
  }

  return {HANDLER: HANDLER, EXITS: EXITS, exits: exits, botCode: botCode, settings: settings};
});
