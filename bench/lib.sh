# Shared by the bench scripts (sourced, not run): ports, readiness waits and the signed token
# every gateway request carries.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# wait_http URL [TRIES]: poll URL every 50 ms until it answers 2xx (default 200 tries, 10 s).
wait_http() {
  local tries=${2:-200}
  for _ in $(seq 1 "$tries"); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "not up: $1" >&2; return 1
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# signed_token DIR: a new RS256 key in DIR/key.pem and a realistic self-signed user token
# (scope complete_code, valid for an hour) signed with it; sets TOKEN and AUTH (the headers).
signed_token() {
  openssl genrsa -out "$1/key.pem" 2048 2>/dev/null
  local now header payload sig
  now=$(date +%s)
  header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
  payload=$(printf '{"iss":"gitlab-ai-gateway","aud":"gitlab-ai-gateway","sub":"777","exp":%d,"nbf":%d,"iat":%d,"jti":"bench","gitlab_realm":"saas","gitlab_instance_id":"1234","scopes":["complete_code"]}' "$((now + 3600))" "$now" "$now" | b64url)
  sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$1/key.pem" | b64url)
  TOKEN="$header.$payload.$sig"
  AUTH=(-H "Authorization: Bearer $TOKEN" -H "X-Gitlab-Authentication-Type: oidc" -H "X-Gitlab-Realm: saas"
        -H "X-Gitlab-Instance-Id: 1234" -H "X-Gitlab-Global-User-Id: 777")
}
