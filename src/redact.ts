/**
 * Secrets that can ride in URLs and connection strings (IMAP passwords, SAS signatures,
 * storage account keys), masked wherever text leaves the process: logs and status lines.
 */
export function redactSecrets(text: string): string {
  return text
    .replace(/\/\/([^:@/\s]*):[^@/\s]*@/g, '//$1:***@')
    .replace(/([?&](?:sig|token|access_token|password|pass)=)[^&\s"']*/gi, '$1***')
    .replace(/((?:AccountKey|SharedAccessSignature|SharedAccessKey)=)[^;\s"']*/gi, '$1***');
}
