/**
 * Text written as one line of a line-based record (a log line, `reason.txt`): control characters
 * and line separators escaped (`\u000a`), so a value from an export (an id holding a line
 * break) cannot forge a line of its own.
 */
export function oneLine(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * Characters that do not show as themselves: C0 and C1 controls (but tab and line feed), DEL,
 * the bidi marks, embeddings, overrides and isolates, zero-width characters, the line and
 * paragraph separators, the BOM; and lone surrogates.
 */
const INVISIBLE_CHARACTERS = '\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F\\u061C\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2069\\uFEFF';
const LONE_SURROGATE = '[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])[\\uDC00-\\uDFFF]';
const INVISIBLE_BUT_TAB_AND_LINE_FEED = new RegExp(`[${INVISIBLE_CHARACTERS}]|${LONE_SURROGATE}`, 'g');
/** In a line of terminal text, tab and line feed too: a line feed would start a line of the text's own. */
const INVISIBLE = new RegExp(`[\\t\\n${INVISIBLE_CHARACTERS}]|${LONE_SURROGATE}`, 'g');

/** The visible marker a character that does not show as itself is shown as: `⟨U+202E⟩`. */
function marker(c: string): string {
  return `⟨U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}⟩`;
}

/**
 * Text from an archive (ids, names, details) for a line printed to a terminal: every character
 * that would not show as itself, tab and line feed too, as a visible `⟨U+001B⟩` marker. So a
 * hostile value cannot forge a line (CR, LF), drive the terminal (ESC, CSI, OSC: colours, the
 * window title, hidden text) or display as something it is not (bidi overrides).
 */
export function visible(text: string): string {
  return text.replace(INVISIBLE, marker);
}

/** The same, tab and line feed kept (HTML, where they are white space), each marker passed through `dress` (a `<span>`, say). */
export function visibleKeepingWhiteSpace(text: string, dress: (marker: string) => string = (m) => m): string {
  return text.replace(INVISIBLE_BUT_TAB_AND_LINE_FEED, (c) => dress(marker(c)));
}
