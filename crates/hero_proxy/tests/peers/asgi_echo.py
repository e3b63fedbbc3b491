"""ASGI app for Debian's hypercorn (HTTP/1.1, h2c upgrade, HTTP/2, WebSocket): answers every HTTP request with
the protocol version, the raw target and the headers it received, as JSON; a WebSocket sends the handshake's
headers as its first message, then echoes. Test peer for hero_proxy (tests/attacks.rs)."""
import json


def _headers(scope):
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        while True:
            m = await receive()
            if m["type"] != "http.request" or not m.get("more_body"):
                break
        body = json.dumps(
            {
                "http_version": scope["http_version"],
                "path": scope["raw_path"].decode("latin-1"),
                "headers": _headers(scope),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    [b"content-type", b"application/json"],
                    [b"content-length", str(len(body)).encode()],
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps({"headers": _headers(scope)})})
        while True:
            m = await receive()
            if m["type"] != "websocket.receive":
                return
            if m.get("text") is not None:
                await send({"type": "websocket.send", "text": m["text"]})
            else:
                await send({"type": "websocket.send", "bytes": m.get("bytes") or b""})
