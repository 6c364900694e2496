// Minimal typings for the untyped Holepunch packages natpunch uses. Only what the code calls is declared.
declare module 'sodium-native' {
  const sodium: {
    crypto_sign_PUBLICKEYBYTES: number;
    crypto_sign_SECRETKEYBYTES: number;
    crypto_sign_SEEDBYTES: number;
    crypto_sign_BYTES: number;
    crypto_sign_keypair(pk: Buffer, sk: Buffer): void;
    crypto_sign_seed_keypair(pk: Buffer, sk: Buffer, seed: Buffer): void;
    crypto_sign_detached(sig: Buffer, msg: Buffer, sk: Buffer): void;
    crypto_sign_verify_detached(sig: Buffer, msg: Buffer, pk: Buffer): boolean;
    randombytes_buf(buf: Buffer): void;
    [name: string]: unknown;
  };
  export default sodium;
}
declare module 'udx-native';
declare module '@hyperswarm/secret-stream';
