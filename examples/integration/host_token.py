# Signs a host token (HS256) for one of the marketplace's users, as its backend
# would: python3 host_token.py <sub> <name> <client|freelancer> [username].
# Needs CONFAB_HOST_JWT_SECRET and CONFAB_HOST_JWT_ISSUER (the values Confab has).
import base64, hashlib, hmac, json, os, sys, time

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def host_token(secret: str, issuer: str, sub: str, name: str, role: str, username=None, ttl=900) -> str:
    claims = {"sub": sub, "name": name, "role": role, "iss": issuer, "exp": int(time.time()) + ttl}
    if username:
        claims["username"] = username
    signed = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    return signed + "." + b64(signature)

if __name__ == "__main__":
    secret, issuer = os.environ["CONFAB_HOST_JWT_SECRET"], os.environ["CONFAB_HOST_JWT_ISSUER"]
    print(host_token(secret, issuer, *sys.argv[1:]))
