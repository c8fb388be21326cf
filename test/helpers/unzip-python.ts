import { execFileSync } from 'node:child_process';

/** Reads an archive's JSON entries with Python's zipfile: a reader independent of ours. */
export function readJsonEntriesIndependently(path: string): Record<string, unknown> {
  const script = 'import json,sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nprint(json.dumps({n: json.loads(z.read(n)) for n in z.namelist() if n.endswith(".json")}))';
  return JSON.parse(execFileSync('python3', ['-c', script, path], { maxBuffer: 1 << 30 }).toString()) as Record<string, unknown>;
}
