// The version digest an `outcome` record may carry beside its `sha256` (see SPEC.md, "Runs"): the
// sha256 (hex) of the message built less its X-Pivot-Export-Id field, `messageVersion` of
// src/formats/message/export-id.ts, the digest the IMAP sink's X-Pivot-Version field and the Graph
// sink's stamp name. Two exports that carry one event build messages that differ only in that
// field: one version. `verify` takes a copy of the record's version for the message the record
// answers for (intact, the same version held in a copy whose X-Pivot-Export-Id differs); a copy
// that differs in anything else is another version, altered. Records written before the field (and
// a record whose field is not 64 lowercase hex digits) have none: only their sha256 is compared.

/** The record's version digest, when it carries one of the form the writer gives it. */
export function recordedVersion(record: object): string | undefined {
  const version = (record as { version?: unknown }).version;
  return typeof version === 'string' && /^[0-9a-f]{64}$/.test(version) ? version : undefined;
}
