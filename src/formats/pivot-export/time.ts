// The times of a Pivot export: "ISO 8601 with a zone" (spec). Every ISO 8601 form of a date and
// time of day with a zone is read, so an exporter that writes the basic form or a decimal comma
// loses no item; each is also given in one canonical form, which the rest of the chain (and
// Date.parse) reads.

/** A zoned time read: the instant to the millisecond, what its further digits add, and its canonical form. */
export interface ZonedTime {
  /** Milliseconds since the epoch (the fraction's first three digits). */
  time: number;
  /** The fraction of a millisecond the further digits give (0 to 1). */
  subMs: number;
  /** `YYYY-MM-DDThh:mm:ss[.fraction]Z`, every digit of the fraction kept: a time already in this form is kept as written. */
  canonical: string;
}

// Date: calendar (`2026-11-23`, `20261123`), ordinal (`2026-327`, `2026327`) or week (`2026-W48-1`, `2026W481`).
const DATE = String.raw`(\d{4})(?:-?(\d\d)-?(\d\d)|-?(\d{3})|-?W(\d\d)-?([1-7]))`;
// Time: hh, hh:mm or hh:mm:ss (or hhmm, hhmmss), a decimal fraction (`.` or `,`) on the last.
const TIME = String.raw`(\d\d)(?::?(\d\d)(?::?(\d\d))?)?(?:[.,](\d+))?`;
// Zone: Z, ±hh, ±hh:mm or ±hhmm.
const ZONE = String.raw`([Zz]|([+-])(\d\d)(?::?(\d\d))?)`;
const ZONED_TIME = new RegExp(`^${DATE}[Tt]${TIME}${ZONE}$`);
/** The canonical form: extended, to the second or a fraction of it, UTC. */
const CANONICAL = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z$/;

const DAY_MS = 86_400_000;
/** Digits a fraction of an hour or a minute may have (10^-30 h is far below any clock's). */
const MAX_SCALED_FRACTION = 30;
/** 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z. */
const FIRST_MS = -62_167_219_200_000;
const LAST_MS = 253_402_300_799_999;

/**
 * Reads an ISO 8601 date and time of day with a zone, in any of the standard's forms, or
 * undefined. Impossible values (`2026-02-31`, `25:00`, a minute or second of 60, a zone of
 * `+24:00`, week 53 of a year without one) are undefined, never rolled over as Date.parse does;
 * so is `24:00` (the end of a day, which would be the next day's) and a leap second.
 */
export function readZonedTime(value: string): ZonedTime | undefined {
  const m = ZONED_TIME.exec(value);
  if (!m) return undefined;
  const [, yearText, monthText, dayText, ordinalText, weekText, weekdayText, hourText, minuteText, secondText, fractionText, zone, sign, zoneHourText, zoneMinuteText] = m;
  const year = Number(yearText);
  let dayNumber: number; // days since the epoch of the date
  if (monthText !== undefined) {
    const month = Number(monthText);
    const day = Number(dayText);
    if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
    dayNumber = civilDays(year, month, day);
  } else if (ordinalText !== undefined) {
    const ordinal = Number(ordinalText);
    if (ordinal < 1 || ordinal > (isLeapYear(year) ? 366 : 365)) return undefined;
    dayNumber = civilDays(year, 1, 1) + ordinal - 1;
  } else {
    // Week 1 is the week (Monday first) holding the year's first Thursday.
    const week = Number(weekText);
    const monday1 = isoWeekOneMonday(year);
    if (week < 1 || week > (isoWeekOneMonday(year + 1) - monday1) / 7) return undefined;
    dayNumber = monday1 + (week - 1) * 7 + Number(weekdayText) - 1;
  }
  const hour = Number(hourText);
  const minute = minuteText === undefined ? 0 : Number(minuteText);
  const second = secondText === undefined ? 0 : Number(secondText);
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  let offsetMinutes = 0;
  if (zone !== 'Z' && zone !== 'z') {
    const zoneHour = Number(zoneHourText);
    const zoneMinute = zoneMinuteText === undefined ? 0 : Number(zoneMinuteText);
    if (zoneHour > 23 || zoneMinute > 59) return undefined;
    offsetMinutes = (sign === '-' ? -1 : 1) * (zoneHour * 60 + zoneMinute);
  }
  let wholeSeconds = hour * 3600 + minute * 60 + second;
  // The fraction's digits as a decimal of seconds: as written on seconds; on an hour or a minute, scaled exactly (BigInt: any number of digits).
  let rest = fractionText ?? '';
  if (rest !== '' && secondText === undefined) {
    // Exact arithmetic costs more than linear time in the digits: a hostile 200,000-digit fraction took 97 ms.
    if (rest.length > MAX_SCALED_FRACTION) return undefined;
    const scale = 10n ** BigInt(rest.length);
    const ofDay = BigInt(wholeSeconds) * scale + BigInt(rest) * (minuteText !== undefined ? 60n : 3600n);
    wholeSeconds = Number(ofDay / scale);
    rest = (ofDay % scale).toString().padStart(rest.length, '0');
  }
  rest = rest.replace(/0+$/, '');
  const time = dayNumber * DAY_MS + wholeSeconds * 1000 - offsetMinutes * 60_000 + Number(rest.slice(0, 3).padEnd(3, '0'));
  // Years 0000 to 9999 only, after the zone too: the canonical form (and Date.parse) has four digits.
  if (time < FIRST_MS || time > LAST_MS) return undefined;
  const subMs = rest.length > 3 ? Number(`0.${rest.slice(3)}`) : 0;
  // Most exporters write the canonical form already (toISOString's): then it is the value itself.
  const canonical = CANONICAL.test(value) ? value : `${new Date(time).toISOString().slice(0, 19)}${rest === '' ? '' : `.${rest}`}Z`;
  return { time, subMs, canonical };
}

function isLeapYear(year: number): boolean {
  return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
}

function daysInMonth(year: number, month: number): number {
  return month === 2 ? (isLeapYear(year) ? 29 : 28) : [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** Days since 1970-01-01 of a proleptic Gregorian date, by arithmetic (Date.UTC reads years 0-99 as 1900-1999). */
function civilDays(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146_097 + dayOfEra - 719_468;
}

/** Days since the epoch of the Monday of ISO week 1 of `year`. */
function isoWeekOneMonday(year: number): number {
  const january4 = civilDays(year, 1, 4);
  const weekday = (((january4 + 3) % 7) + 7) % 7; // Monday 0 (1970-01-01 was a Thursday)
  return january4 - weekday;
}

/** Milliseconds since the epoch of an ISO 8601 time with a zone (any form readZonedTime reads), or NaN. */
export function parseZonedTime(value: string): number {
  return readZonedTime(value)?.time ?? NaN;
}
