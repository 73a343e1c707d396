"""A TLS front for a plain TCP service (the end-to-end TLS tests): terminates TLS with the given
certificate and key on 127.0.0.1:LISTEN and relays bytes to 127.0.0.1:TARGET. Prints "ready"
once listening. Standard library only.

    python tls_proxy.py CERT KEY LISTEN TARGET
"""
import socket
import ssl
import sys
import threading


def relay(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(conn, ctx, target):
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError):
        # a client that refuses our certificate ends the handshake: that is the point of a test
        conn.close()
        return
    upstream = socket.create_connection(("127.0.0.1", target))
    threading.Thread(target=relay, args=(tls, upstream), daemon=True).start()
    relay(upstream, tls)


def main():
    cert, key, listen, target = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", listen), reuse_port=False)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, ctx, target), daemon=True).start()


if __name__ == "__main__":
    main()
