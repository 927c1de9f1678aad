#!/usr/bin/env python3
"""A small HTTP(S) reverse proxy in front of an MLflow tracking server, for CI.

scripts/mlflow-check.sh puts it between `upsell train` and a throwaway
`mlflow server` to exercise what a plain loopback server cannot:

* TLS: with --cert/--key it terminates TLS with that certificate chain and
  talks plain HTTP to the upstream server.
* Retries: with --fail-first N it answers the first N requests itself with
  --fail-status (default 503) and a small JSON error body (a 429 also carries
  `Retry-After: 0`), then forwards everything else.

Usage:
    mlflow_proxy.py --listen 127.0.0.1:0 --upstream http://127.0.0.1:5000 \
        [--cert server.pem --key server.key] \
        [--fail-first N] [--fail-status CODE] [--count-file counts.json]

The first line on stdout is the bound port (useful with port 0), flushed as
soon as the socket listens. With --count-file, after every request the file
is replaced with {"failed": F, "forwarded": W, "upstream_errors": E}.
One line per request is logged on stderr.

Forwarding: method, path and query, and all end-to-end headers (Authorization
included) go upstream unchanged; Host is set to the upstream's address (MLflow
validates Host) and X-Forwarded-For/-Proto/-Host are added. Request bodies
with Content-Length are streamed through; `Transfer-Encoding: chunked` bodies
are de-chunked into a spooled temporary file and sent with Content-Length.
The upstream's status, headers and body are streamed back; a body without a
Content-Length is re-chunked for HTTP/1.1 clients. Client connections are
kept alive (HTTP/1.1); each request uses a fresh upstream connection. An
unreachable upstream gives 502.

Standard library only.
"""

import argparse
import http.client
import http.server
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
import urllib.parse

CHUNK = 64 * 1024
# Hop-by-hop headers (RFC 9110 section 7.6.1) are not forwarded in either direction.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


class Counts:
    """Thread-safe request counters, mirrored to a JSON file when asked."""

    def __init__(self, fail_first, path):
        self.lock = threading.Lock()
        self.fail_first = fail_first
        self.path = path
        self.values = {"failed": 0, "forwarded": 0, "upstream_errors": 0}

    def take_failure(self):
        """True (and counted) while fewer than --fail-first requests were failed."""
        with self.lock:
            if self.values["failed"] < self.fail_first:
                self.values["failed"] += 1
                self._write()
                return True
            return False

    def add(self, key):
        with self.lock:
            self.values[key] += 1
            self._write()

    def save(self):
        with self.lock:
            self._write()

    def _write(self):
        if not self.path:
            return
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.values, f)
            f.write("\n")
        os.replace(tmp, self.path)


class ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, upstream, ssl_context, fail_status, counts):
        super().__init__(address, ProxyHandler)
        self.upstream = upstream  # (host, port)
        self.ssl_context = ssl_context
        self.fail_status = fail_status
        self.counts = counts

    def finish_request(self, request, client_address):
        # Runs in the connection's own thread, so a slow or failed TLS
        # handshake never blocks accept().
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(30)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as err:
            sys.stderr.write(f"{client_address[0]}:{client_address[1]} TLS handshake failed: {err}\n")
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections end after this many seconds

    def do_GET(self):
        self.proxy()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- request body -----------------------------------------------------

    def is_chunked(self):
        codings = self.headers.get("Transfer-Encoding", "")
        return "chunked" in [c.strip().lower() for c in codings.split(",")]

    def content_length(self):
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else 0

    def read_chunked(self, sink):
        """De-chunks the request body into `sink` (a writable file or None to drop it)."""
        while True:
            line = self.rfile.readline(65537)
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            remaining = size
            while remaining:
                data = self.rfile.read(min(CHUNK, remaining))
                if not data:
                    raise ConnectionError("client closed the connection inside a chunk")
                remaining -= len(data)
                if sink is not None:
                    sink.write(data)
            self.rfile.readline(3)  # CRLF after the chunk
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass  # trailer fields, dropped

    def drain_body(self):
        if self.is_chunked():
            self.read_chunked(None)
            return
        remaining = self.content_length()
        while remaining:
            data = self.rfile.read(min(CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)

    # -- replies made here ------------------------------------------------

    def reply_json(self, status, message, extra_headers=()):
        code = "BAD_GATEWAY" if status == 502 else "PROXY_INJECTED_FAILURE"
        body = json.dumps({"error_code": code, "message": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra_headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- the proxy --------------------------------------------------------

    def proxy(self):
        server = self.server
        if server.counts.take_failure():
            self.drain_body()
            extra = [("Retry-After", "0")] if server.fail_status == 429 else []
            self.reply_json(server.fail_status, f"injected by mlflow_proxy.py (--fail-status {server.fail_status})", extra)
            return

        spool = None
        try:
            if self.is_chunked():
                spool = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
                self.read_chunked(spool)
                length = spool.tell()
                spool.seek(0)
            elif "Content-Length" in self.headers:
                length = self.content_length()
            else:
                length = None

            host, port = server.upstream
            upstream = http.client.HTTPConnection(host, port, timeout=300)
            try:
                try:
                    self.send_upstream(upstream, length, spool)
                    response = upstream.getresponse()
                except OSError as err:
                    server.counts.add("upstream_errors")
                    # The body may be partly unread; the connection cannot be reused.
                    self.close_connection = True
                    self.reply_json(502, f"upstream {host}:{port}: {err}")
                    return
                self.relay(response)
                server.counts.add("forwarded")
            finally:
                upstream.close()
        finally:
            if spool is not None:
                spool.close()

    def send_upstream(self, upstream, length, spool):
        host, port = self.server.upstream
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        connection_tokens = {t.strip().lower() for t in self.headers.get("Connection", "").split(",")}
        for name, value in self.headers.items():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in connection_tokens or lower in ("host", "content-length", "expect"):
                continue
            upstream.putheader(name, value)
        upstream.putheader("Host", f"{host}:{port}")
        forwarded_for = self.headers.get("X-Forwarded-For")
        client = self.client_address[0]
        upstream.putheader("X-Forwarded-For", f"{forwarded_for}, {client}" if forwarded_for else client)
        upstream.putheader("X-Forwarded-Proto", "https" if self.server.ssl_context else "http")
        if self.headers.get("Host"):
            upstream.putheader("X-Forwarded-Host", self.headers["Host"])
        if length is not None:
            upstream.putheader("Content-Length", str(length))
        upstream.endheaders()
        source = spool if spool is not None else self.rfile
        remaining = length or 0
        while remaining:
            data = source.read(min(CHUNK, remaining))
            if not data:
                raise ConnectionError("client closed the connection inside the request body")
            upstream.send(data)
            remaining -= len(data)

    def relay(self, response):
        """Streams the upstream response back to the client."""
        self.send_response_only(response.status, response.reason)
        connection_tokens = {t.strip().lower() for t in (response.getheader("Connection") or "").split(",")}
        for name, value in response.getheaders():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in connection_tokens:
                continue
            self.send_header(name, value)
        no_body = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        known_length = response.getheader("Content-Length") is not None
        chunked = not no_body and not known_length and self.request_version == "HTTP/1.1"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif not no_body and not known_length:
            self.close_connection = True  # HTTP/1.0 client: the end of the body is the end of the connection
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.log_request(response.status)
        if no_body:
            return
        while True:
            data = response.read1(CHUNK)
            if not data:
                break
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def host_port(text, what):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{what} must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on; port 0 picks a free one (default %(default)s)")
    parser.add_argument("--upstream", required=True, help="the MLflow server, http://HOST:PORT")
    parser.add_argument("--cert", help="PEM certificate chain to serve TLS with (needs --key)")
    parser.add_argument("--key", help="PEM private key of --cert")
    parser.add_argument("--fail-first", type=int, default=0, metavar="N", help="answer the first N requests with --fail-status")
    parser.add_argument("--fail-status", type=int, default=503, metavar="CODE", help="status for --fail-first (default %(default)s)")
    parser.add_argument("--count-file", help="JSON file with the failed/forwarded counts, rewritten after each request")
    args = parser.parse_args()

    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    upstream = urllib.parse.urlsplit(args.upstream)
    if upstream.scheme != "http" or not upstream.hostname or not upstream.port:
        parser.error(f"--upstream must be http://HOST:PORT, got {args.upstream!r}")
    try:
        listen = host_port(args.listen, "--listen")
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    if not 100 <= args.fail_status <= 599:
        parser.error("--fail-status must be an HTTP status code")

    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)

    counts = Counts(args.fail_first, args.count_file)
    if ":" in listen[0]:
        ProxyServer.address_family = socket.AF_INET6
    server = ProxyServer(listen, (upstream.hostname, upstream.port), context, args.fail_status, counts)
    counts.save()  # a count file with zeros before the first request
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
