"""Superset configuration for Sentencify: everything comes from environment variables.

Used by the local stack (`sentencify stack up` sets SUPERSET_CONFIG_PATH to this file) and by
the production compose file, so both run the same configuration.
"""

import os

# Required: Superset refuses to start with its built-in placeholder key.
SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]
SQLALCHEMY_DATABASE_URI = os.environ["SUPERSET_METADATA_URI"]

# The Public role stays empty: granting it anything makes token-authenticated API calls
# act as anonymous. Everybody logs in.
PUBLIC_ROLE_LIKE = None

# Caches for metadata and chart data: Redis when given, else none (the views are small).
_redis = os.environ.get("SUPERSET_CACHE_REDIS_URL")
if _redis:
    _cache = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": _redis, "CACHE_DEFAULT_TIMEOUT": 300}
    CACHE_CONFIG = {**_cache, "CACHE_KEY_PREFIX": "superset_meta_"}
    DATA_CACHE_CONFIG = {**_cache, "CACHE_KEY_PREFIX": "superset_data_", "CACHE_DEFAULT_TIMEOUT": 60}

# The session cookie: never readable by scripts; sent over HTTPS only when Superset is served behind
# TLS (production: SUPERSET_SESSION_COOKIE_SECURE=true; the local stack is plain HTTP on 127.0.0.1).
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = os.environ.get("SUPERSET_SESSION_COOKIE_SECURE", "false").lower() == "true"

# Behind a reverse proxy in production (X-Forwarded-* headers); off for the local stack.
ENABLE_PROXY_FIX = os.environ.get("SUPERSET_ENABLE_PROXY_FIX", "false").lower() == "true"
# Login attempts are rate limited in production only (the tests log in many times).
AUTH_RATE_LIMITED = os.environ.get("SUPERSET_AUTH_RATE_LIMITED", "false").lower() == "true"
# Charts should not wait for a slow view forever.
SUPERSET_WEBSERVER_TIMEOUT = int(os.environ.get("SUPERSET_WEBSERVER_TIMEOUT", "60"))
SQLLAB_TIMEOUT = SUPERSET_WEBSERVER_TIMEOUT
# The dashboard does not need the examples or the feedback of a dev server.
SQLALCHEMY_EXAMPLES_URI = None
