/**
 * Base64 of bytes (no JSR `@std/encoding` here), in chunks so large audio does not blow the
 * argument limit of `String.fromCharCode`.
 *
 * @module
 */

/** Standard base64 (with padding) of `bytes`. */
export function encodeBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
