/*
 * smsgate: Salesbot's "send SMS" step (location `salesbot_designer`, handler `send_sms`).
 *
 * amoCRM draws the step's settings from the manifest's `salesbot_designer.send_sms.settings` (text,
 * template_id) and calls `salesbotDesignerSettings($body, renderRow, params)`: this module adds a list of
 * the account's templates (or "my own text": the `text` field, whose markers such as {{lead.name}} the bot
 * fills in itself), a preview with the SMS parts, and names the step's two exits, "sent" and "failed".
 * `onSalesbotDesignerSave(handler_code, params)` returns the step's bot code: a `widget_request` to
 * smsgate's /amocrm/salesbot with the text and template, then a branch on what smsgate continues the bot
 * with ({{json.status}}): exit "sent" when the provider took the SMS, "failed" otherwise. The picker and
 * the preview are picker.js's (shared with pipeline.js).
 * Loaded by script.js (its init preloads it with picker.js; the Salesbot callbacks call it).
 */
define(['jquery'], function ($) {
  'use strict';

  var ROOT_CLASS = 'smsgate-bot';
  var HANDLER = 'send_sms';
  var EXITS = ['sent', 'failed'];

  // The step's exits, as salesbotDesignerSettings returns them (picker: picker.js).
  function exits(widget, picker) {
    var t = picker.texts(widget.i18n('salesbot'));
    return {exits: EXITS.map(function (code) { return {code: code, title: t('exit_' + code)}; })};
  }

  /*
   * The step's bot code (onSalesbotDesignerSave): amoCRM's Salesbot JSON, one step whose question asks smsgate
   * (widget_request; the bot waits until smsgate continues it) and then goes to an exit by {{json.status}}.
   * picker: picker.js (its rule for a template id: ASCII digits, or nothing).
   */
  function botCode(baseUrl, handlerCode, params, picker) {
    params = params || {};
    var data = {text: String(params.text || ''), template_id: picker.templateId(params.template_id)};
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
   * widget: the widget instance (i18n); api: {call(method, path, body), errorText(xhr), picker (picker.js)}
   * from script.js; $body: the step's settings as amoCRM drew them.
   */
  function settings(widget, api, $body) {
    var picker = api.picker;
    var el = picker.el;
    var t = picker.texts(widget.i18n('salesbot'));
    var $scope = $body && $body.length ? $body : $(document);
    var $text = picker.settingInput($scope, 'text');
    var $template = picker.settingInput($scope, 'template_id');
    $scope.find('.' + ROOT_CLASS).remove();
    if ($template.length) {
      picker.fieldOf($template).hide();
    }
    var $root = el('div', ROOT_CLASS + ' smsgate-bot-choice');
    var $after = el('div', ROOT_CLASS + ' smsgate-bot-outcome');
    var choice = picker.templatePicker(api, t, {prefix: 'smsgate-bot', name: 'smsgate_bot_template', $text: $text,
      $template: $template});
    $root.append(choice.choice);
    $after.append(
      choice.preview,
      el('div', 'smsgate-label', t('exits_title')),
      el('ul', 'smsgate-bot-exits').append(
        el('li', '', t('exit_sent_help')), el('li', '', t('exit_failed_help'))),
      el('div', 'smsgate-help', t('phone_help')));
    if ($text.length) {
      picker.fieldOf($text).before($root).after($after);
    } else {
      $scope.append($root, $after);
    }
    choice.start();
    return exits(widget, picker);
  }

  return {HANDLER: HANDLER, EXITS: EXITS, exits: exits, botCode: botCode, settings: settings};
});
