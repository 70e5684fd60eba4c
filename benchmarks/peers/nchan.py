"""Nchan: Debian's nginx with libnginx-mod-nchan and its Redis backend.

Our own nginx master (``-p`` a temp prefix, ``-c`` this generated config, ``daemon off``,
one worker, a free port): a system nginx, if any, is never touched.
"""

from __future__ import annotations

from pathlib import Path

MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")

_CONFIG = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 65536;
load_module {module};

events {{
    worker_connections 30000;
    multi_accept on;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_body_buffer_size 64k;
    keepalive_requests 10000000;  # the publisher's keep-alive connections (default: 1000)

    nchan_redis_url "{redis_url}";
    nchan_use_redis on;
    nchan_message_buffer_length 200;
    nchan_message_timeout 60s;

    server {{
        listen 127.0.0.1:{port} backlog=4096;

        location = /readyz {{
            return 200 "ok\\n";
        }}
        location ~ ^/sub/([a-z0-9._-]+)$ {{
            nchan_subscriber websocket;
            nchan_channel_id $1;
            # Every server in the suite keeps its connections alive (livefeed and Socket.IO
            # every 25 s, the uvicorn and websockets peers every 20 s); Nchan's default is
            # no ping at all.
            nchan_websocket_ping_interval 25;
        }}
        location ~ ^/pub/([a-z0-9._-]+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
        }}
    }}
}}
"""


def write_config(prefix: Path, port: int, redis_url: str) -> Path:
    """Write nginx.conf (and the temp dirs it names) under ``prefix``; return its path."""
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / name).mkdir(parents=True, exist_ok=True)
        (prefix / name).chmod(0o777)
    url = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    config = prefix / "nginx.conf"
    config.write_text(_CONFIG.format(prefix=prefix, module=MODULE, port=port, redis_url=url))
    return config
