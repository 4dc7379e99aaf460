/** JWS algorithms of `private_key_jwt` assertions; RS384 unless an issuer's `signingAlg` says ES384 (SMART-CAUTH-09). */
export const SIGNING_ALGS = ['RS384', 'ES384'] as const;
export type SigningAlg = (typeof SIGNING_ALGS)[number];
export const DEFAULT_SIGNING_ALG: SigningAlg = 'RS384';

/** The assertion algorithm of an issuer (its `signingAlg`, or the default); kept out of the parsed config like `PROXY_DEFAULTS`. */
export function signingAlgOf(issuer: { readonly signingAlg?: SigningAlg | undefined }): SigningAlg {
  return issuer.signingAlg ?? DEFAULT_SIGNING_ALG;
}

/** The assertion algorithms a config signs with: one key per algorithm, none without `private_key_jwt`. */
export function signingAlgsOf(config: { readonly issuers: readonly { readonly clientAuth: string; readonly signingAlg?: SigningAlg | undefined }[] }): SigningAlg[] {
  const used = new Set(config.issuers.filter((issuer) => issuer.clientAuth === 'private_key_jwt').map(signingAlgOf));
  return SIGNING_ALGS.filter((alg) => used.has(alg));
}
