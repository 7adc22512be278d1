/** TLS failures of a broker connection in plain words (the daemon's log and `doctor` say the same). */

/** Node's TLS verification codes (OpenSSL's X509_V_ERR_* names) meaning "not signed by a CA we trust". */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);

/**
 * What a TLS failure means, with the key to look at; undefined when `err` is not one. `ca` names the CA
 * file in use ("" = the system's CAs); `clientCert` says whether a client certificate was offered.
 */
export function tlsFailure(err: { code?: string; message?: string }, opts: { ca: string; clientCert: boolean }): string | undefined {
  const code = err.code ?? '';
  const ca = opts.ca ? `mqtt.ca (${opts.ca})` : "the system's CAs (set mqtt.ca to the broker's CA)";
  if (UNTRUSTED.has(code)) return `TLS: certificate verify failed: the broker's certificate is not signed by ${ca}`;
  if (code === 'CERT_HAS_EXPIRED') return "TLS: certificate verify failed: the broker's certificate has expired";
  if (code === 'CERT_NOT_YET_VALID') return "TLS: certificate verify failed: the broker's certificate is not valid yet (check the clock)";
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return "TLS: hostname mismatch: the broker's certificate is not for the host in mqtt.url";
  if (/alert certificate required|alert handshake failure|alert bad certificate|alert unknown ca/i.test(err.message ?? ''))
    return opts.clientCert
      ? 'TLS: the broker refused our client certificate (mqtt.cert): is it signed by a CA the broker trusts?'
      : 'TLS: the broker wants a client certificate: set mqtt.cert and mqtt.key';
  return undefined;
}
