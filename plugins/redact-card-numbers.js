// Example plugin: masks payment card numbers (Luhn-checked) and IBANs (mod-97-checked) in the
// text and html of each item, and says how many it masked in an X-Pivot-Redacted header.
// Usage: pivot-archive run export.zip --sink maildir:./out --plugin ./plugins/redact-card-numbers.js
import { definePlugin } from 'pivot-archive';

const CARD = /\b\d(?:[ -]?\d){12,18}\b/g;
const IBAN = /\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b/g;

function luhnValid(digits) {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = Number(digits[digits.length - 1 - i]);
    if (i % 2 === 1) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
    sum += d;
  }
  return sum % 10 === 0;
}

function ibanValid(candidate) {
  const iban = candidate.replace(/ /g, '');
  const rearranged = iban.slice(4) + iban.slice(0, 4);
  let remainder = 0;
  for (const ch of rearranged) {
    const value = /[A-Z]/.test(ch) ? String(ch.charCodeAt(0) - 55) : ch;
    for (const digit of value) remainder = (remainder * 10 + Number(digit)) % 97;
  }
  return remainder === 1;
}

function redact(text, counts) {
  return text
    .replace(CARD, (match) => {
      const digits = match.replace(/\D/g, '');
      if (!luhnValid(digits)) return match;
      counts.card++;
      return `[card ****${digits.slice(-4)}]`;
    })
    .replace(IBAN, (match) => {
      if (!ibanValid(match)) return match;
      counts.iban++;
      return `[IBAN ${match.slice(0, 2)}****]`;
    });
}

export default definePlugin({
  name: 'redact-card-numbers',
  version: '1.0.0',
  hostApi: '^1.0.0',
  transform(item) {
    const counts = { card: 0, iban: 0 };
    const text = item.text === undefined ? undefined : redact(item.text, counts);
    const html = item.html === undefined ? undefined : redact(item.html, counts);
    if (counts.card + counts.iban === 0) return item;
    return {
      ...item,
      text,
      html,
      headers: { ...item.headers, 'X-Pivot-Redacted': `card=${counts.card}; iban=${counts.iban}` },
    };
  },
});
