/*
 * smsgate: the template picker and preview that the pipeline's action (pipeline.js) and Salesbot's step
 * (salesbot.js) both draw in amoCRM's settings form of theirs: a list of the account's active templates (or
 * "my own text", the form's own text field), kept in the form's hidden template setting, and a preview of
 * what the SMS will say with its length and parts (POST /templates/preview/), refreshed as the text is typed.
 * Also the small helpers both modules use to find and fill amoCRM's inputs.
 *
 * It reads no i18n itself: each caller passes its own `t` (its own group's texts: heading, choose,
 * choose_help, loading, own_text, template_gone, preview, empty, counter, encoding_<encoding>, markers_note).
 * script.js loads it with pipeline.js and salesbot.js and hands it to them as `api.picker`.
 */
define(['jquery'], function ($) {
  'use strict';

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

  // A translator over one i18n group of the widget (texts: widget.i18n('<group>'), which the caller reads, so
  // build_widget sees which groups a module needs): t(key, {name: value}) fills in {name}.
  function texts(group) {
    var all = group || {};
    return function (key, values) {
      var text = all[key] || key;
      Object.keys(values || {}).forEach(function (name) {
        text = text.split('{' + name + '}').join(String(values[name]));
      });
      return text;
    };
  }

  // An input of amoCRM's settings form by its setting code: amoCRM names them `code` or `...[code]`.
  function settingInput($scope, code) {
    return $scope.find('input[name="' + code + '"], input[name$="[' + code + ']"], textarea[name="' + code +
      '"], textarea[name$="[' + code + ']"]').first();
  }

  // The whole row of a setting (its label too): the outermost wrapper amoCRM is known to use, else the input.
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

  // A template id as a setting keeps it: ASCII digits, or nothing.
  function templateId(value) {
    var text = $.trim(String(value === null || value === undefined ? '' : value));
    return /^[1-9][0-9]{0,17}$/.test(text) ? text : '';
  }

  /*
   * The picker and the preview, wired to amoCRM's inputs:
   *   api: {call(method, path, body), errorText(xhr)}; t: the caller's translator;
   *   options.prefix: the class prefix of its elements ('smsgate-dp' -> .smsgate-dp-template, -preview, ...);
   *   options.name: the <select>'s name; options.$text: the form's text field (may be empty);
   *   options.$template: the form's hidden template setting (may be empty).
   * Returns {choice: [title, label, select, note, help], preview: [title, preview, problems]} for the caller
   * to place around amoCRM's text field, and start(), which loads the templates (once they are placed).
   */
  function templatePicker(api, t, options) {
    var prefix = options.prefix;
    var $text = options.$text;
    var $template = options.$template;
    var $select = el('select', 'smsgate-input ' + prefix + '-template').attr('name', options.name);
    var $templateNote = el('div', prefix + '-template-note');
    var $preview = el('div', prefix + '-preview');
    var $problems = el('div', prefix + '-problems');

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
          el('div', prefix + '-preview-text', reply.text),
          el('div', 'smsgate-help ' + prefix + '-counter', t('counter', {length: reply.length, parts: reply.parts,
            encoding: t('encoding_' + reply.encoding)})));
        if (reply.missing && reply.missing.length) {
          $preview.append(el('div', 'smsgate-help ' + prefix + '-markers', t('markers_note')));
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
        $templateNote.empty();  // the owner chose: an earlier note about the saved template no longer applies
      }
      if ($template.length) {
        setValue($template, chosen);
      }
      if ($text.length) {
        fieldOf($text).toggle(!chosen);
      }
      refresh();
    });
    $text.on('input.smsgatePicker', function () {
      if (!$select.val()) {
        clearTimeout(timer);
        timer = setTimeout(refresh, 300);
      }
    });

    function start() {
      api.call('GET', '/templates/').then(function (templates) {
        $select.empty().append(el('option', '', t('own_text')).val(''));
        $.each(templates, function (i, template) {
          if (template.is_active) {
            $select.append(el('option', '', template.name).val(String(template.id)));
          }
        });
        var saved = $template.length ? $.trim($template.val() || '') : '';
        var current = templateId(saved);
        if (current && $select.find('option[value="' + current + '"]').length) {
          $select.val(current);
        } else if (saved) {  // a template deleted or switched off since the form was saved (or no id at all)
          $templateNote.append(el('div', 'smsgate-notice smsgate-notice_error', t('template_gone')));
          setValue($template, '');
        }
        $select.prop('disabled', false).trigger('change');
      }, function (xhr) {
        $select.empty();
        $templateNote.append(el('div', 'smsgate-notice smsgate-notice_error', api.errorText(xhr)));
      });
    }

    return {
      choice: [el('div', 'smsgate-dp-title', t('heading')), el('label', 'smsgate-label', t('choose')), $select,
        $templateNote, el('div', 'smsgate-help', t('choose_help'))],
      preview: [el('div', 'smsgate-label ' + prefix + '-preview-title', t('preview')), $preview, $problems],
      start: start
    };
  }

  return {el: el, texts: texts, settingInput: settingInput, fieldOf: fieldOf, setValue: setValue,
    templateId: templateId, templatePicker: templatePicker};
});
