/** Signs HS256 tokens for tests, as the gateway's issuer would. */

import { createHmac } from "node:crypto";

/** The secret every test gateway is started with. */
export const SECRET = "test-secret";

const b64url = (data: string | Buffer) => Buffer.from(data).toString("base64url");

/** A token for `user`, valid for `ttlSecs` (negative for an expired one), signed with `secret`. */
export function sign(user: string, ttlSecs = 600, secret = SECRET): string {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = b64url(JSON.stringify({ sub: user, exp: Math.floor(Date.now() / 1000) + ttlSecs }));
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

/** A token carrying `claims` (`exp` added ten minutes ahead when missing), signed with `secret`. */
export function signClaims(claims: Record<string, unknown>, secret = SECRET): string {
  const body = { exp: Math.floor(Date.now() / 1000) + 600, ...claims };
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = b64url(JSON.stringify(body));
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}
