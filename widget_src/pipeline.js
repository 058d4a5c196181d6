/*
 * smsgate: the digital pipeline's "send SMS" action (location `digital_pipeline`, callback `dpSettings`).
 *
 * amoCRM draws the action's settings form from the manifest's `dp.settings` (template_id, message, key)
 * in its trigger modal. This module turns it into something an owner can use: a list of the account's
 * templates (or "my own text", the `message` field), a preview of what the SMS will say and how many
 * parts it takes, and the account's own key filled into the hidden `key` field (amoCRM does not sign the
 * pipeline's webhook: smsgate refuses every call without that key). The picker and the preview are picker.js's
 * (shared with salesbot.js). Loaded by script.js's dpSettings, and by its settings page for the action's
 * section (settingsSection: latest outcomes, refused calls, the key).
 */
define(['jquery'], function ($) {
  'use strict';

  var ROOT_CLASS = 'smsgate-dp';
  var WAIT_TRIES = 40;  // amoCRM draws the form after calling dpSettings: look for it for a few seconds
  var WAIT_STEP = 150;

  /*
   * widget: the widget instance (i18n); api: {call(method, path, body), errorText(xhr), picker (picker.js)}
   * from script.js. $where (optional): the modal's body when amoCRM passes it.
   */
  function dpSettings(widget, api, $where) {
    var picker = api.picker;
    var el = picker.el;
    var settingInput = picker.settingInput;
    var fieldOf = picker.fieldOf;
    var t = picker.texts(widget.i18n('dp'));

    var tries = 0;
    function find() {
      var $scope = $where && $where.length ? $where : $('[data-action="send_widget_hook"]');
      var $key = settingInput($scope, 'key');
      if (!$key.length) {
        $scope = $(document);
        $key = settingInput($scope, 'key');
      }
      if (!$key.length) {
        if (tries++ < WAIT_TRIES) {
          setTimeout(find, WAIT_STEP);
        } else {
          console.debug('smsgate: the pipeline action form was not found');
        }
        return;
      }
      var $form = $key.closest('form, [data-action="send_widget_hook"]');
      draw($form.length ? $form : $scope, $key);
    }

    function draw($form, $key) {
      var $template = settingInput($form, 'template_id');
      var $message = settingInput($form, 'message');
      $form.find('.' + ROOT_CLASS).remove();
      fieldOf($key).hide();
      if ($template.length) {
        fieldOf($template).hide();
      }
      var $root = el('div', ROOT_CLASS + ' smsgate-dp-choice');
      var $after = el('div', ROOT_CLASS + ' smsgate-dp-outcome');
      var $keyState = el('div', 'smsgate-dp-key');
      var $refused = el('div', 'smsgate-dp-refused');
      var choice = picker.templatePicker(api, t, {prefix: 'smsgate-dp', name: 'smsgate_dp_template', $text: $message,
        $template: $template});
      // The choice above amoCRM's own text field, what comes of it below (the field sits between).
      $root.append(choice.choice);
      $after.append(choice.preview, $keyState, $refused);
      if ($message.length) {
        fieldOf($message).before($root).after($after);
      } else {
        fieldOf($key).before($root, $after);
      }
      choice.start();

      api.call('GET', '/pipeline/').then(function (reply) {
        if (reply.key) {
          if ($key.val() !== reply.key) {
            picker.setValue($key, reply.key);
          }
          $keyState.empty().append(el('span', 'smsgate-badge smsgate-badge_ok', t('key_set')));
        } else {
          $keyState.empty().append(el('div', 'smsgate-notice smsgate-notice_error', t('key_admin_only')));
        }
        if (reply.refused_calls) {
          $refused.append(el('div', 'smsgate-notice', t('refused', {count: reply.refused_calls})));
        }
      }, function (xhr) {
        $keyState.empty().append(el('div', 'smsgate-notice smsgate-notice_error', api.errorText(xhr)));
      });
    }

    find();
    return true;
  }

  /*
   * The settings page's section (script.js calls it into $box): what the pipeline action did lately, the
   * calls refused for want of the key, and (administrators) replacing the key.
   */
  function settingsSection(widget, api, $box) {
    var el = api.picker.el;
    var t = api.picker.texts(widget.i18n('dp'));
    var lang = (widget.i18n('meta') || {}).lang || 'ru';

    function draw(reply) {
      $box.empty().append(el('h3', 'smsgate-subtitle', t('section_title')), el('p', 'smsgate-muted', t('section_intro')));
      var counts = reply.counts || {};
      $box.append(el('p', 'smsgate-dp-counts', t('counts', {sent: counts.sent || 0, no_phone: counts.no_phone || 0,
        refused: (counts.refused || 0) + (counts.not_found || 0) + (counts.failed || 0),
        waiting: (counts.pending || 0) + (counts.reading || 0)})));
      if (reply.refused_calls) {
        var when = reply.refused_last_at ? new Date(reply.refused_last_at).toLocaleString(lang) : '';
        $box.append(el('div', 'smsgate-notice smsgate-notice_error smsgate-dp-refused-calls',
          t('refused_settings', {count: reply.refused_calls, when: when})));
      }
      if (!reply.attention.length) {
        $box.append(el('p', 'smsgate-muted smsgate-dp-no-attention', t('no_attention')));
      } else {
        var $body = el('tbody');
        $.each(reply.attention, function (i, event) {
          $body.append(el('tr', 'smsgate-dp-event').attr('data-reason', event.reason).append(
            el('td', '', new Date(event.received_at).toLocaleString(lang)),
            el('td', 'smsgate-dp-lead').append(el('a', '', String(event.lead_id))
              .attr({href: '/leads/detail/' + event.lead_id, target: '_blank', rel: 'noopener'})),
            el('td', '', event.state_label),
            el('td', 'smsgate-muted', t('reason_' + event.reason) !== 'reason_' + event.reason
              ? t('reason_' + event.reason) : event.detail || event.reason)));
        });
        $box.append(el('table', 'smsgate-table smsgate-dp-attention').append(el('thead').append(el('tr').append(
          el('th', '', t('col_time')), el('th', '', t('col_lead')), el('th', '', t('col_state')),
          el('th', '', t('col_reason')))), $body));
      }
      if (reply.key) {
        var armed = false;
        var $message = el('div', 'smsgate-dp-key-message');
        var $rotate = el('button', 'smsgate-button smsgate-dp-rotate', t('rotate')).attr('type', 'button');
        $rotate.on('click', function () {
          if (!armed) {  // a second click replaces it (amoCRM forbids modal browser dialogs)
            armed = true;
            $rotate.text(t('rotate_confirm'));
            return;
          }
          api.call('POST', '/pipeline/key/').then(function (fresh) {
            draw(fresh);
            $box.find('.smsgate-dp-key-message').append(el('div', 'smsgate-notice', t('rotated')));
          }, function (xhr) {
            $message.empty().append(el('div', 'smsgate-notice smsgate-notice_error', api.errorText(xhr)));
          });
        });
        $box.append(el('div', 'smsgate-help', t('key_help')), $rotate, $message);
      }
    }

    api.call('GET', '/pipeline/').then(draw, function (xhr) {
      $box.empty().append(el('div', 'smsgate-notice smsgate-notice_error', api.errorText(xhr)));
    });
    return true;
  }

  return {dpSettings: dpSettings, settingsSection: settingsSection};
});
