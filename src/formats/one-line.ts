/**
 * Text written as one line of a line-based record (a log line, `reason.txt`): control characters
 * and line separators escaped (`\u000a`), so a value from an export (an id holding a line
 * break) cannot forge a line of its own.
 */
export function oneLine(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
