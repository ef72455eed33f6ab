#!/usr/bin/python3
"""A scriptable, hostile SMTP server for the relay tests (issue 7): it plays
the remote MX or smarthost that an SMTP client must survive (rules A3, A5,
A6, A11, A12 of shared/README.md). It behaves like a plain ESMTP server
except at one stage of the session (--at), where it does what --mode says:

  accept      nothing hostile: a well-behaved server that logs each message
              byte-exact (the raw DATA, dot-stuffed, up to CRLF.CRLF)
  long-line   a reply line of --size bytes (default 8192, over 4096)
  endless     a multi-line reply that never ends (250-... lines until the
              client closes, --max-bytes or --max-seconds)
  ctl         replies carrying a bare CR, a bare LF and a NUL inside lines
  early       a reply sent before the client's command (the stream is then
              one reply ahead: a client must not take it for its answer)
  tempfail    421 (or --code) then close
  reject      554 (or --code); at the banner, then 503 to all but QUIT
  tls-stall   offers STARTTLS, answers 220, then never completes the
              handshake (reads and logs what comes, never answers)
  silent      never sends a banner (holds the connection)
  inject      a multi-line reply (553, or --code) whose lines carry text
              made to look like envelope fields and headers, with bare LFs
              (CVE-2020-8794's way in); --text replaces the lines

Stages (--at): banner, ehlo (or HELO), mail, rcpt, data (the reply to DATA),
dot (the reply after the message), quit. Each mode has a default stage.

It logs every event as one JSON line to --log, flushed at once:
{"t": time, "conn": n, "ev": "connect"|"recv"|"send"|"message"|"tls"|
"stall"|"close", "peer": ..., "data": base64 of the bytes}. "recv" is one
command line without its CRLF; "message" the raw DATA.

Bounded: lines of 1 MiB, messages of 64 MiB, stalls and endless replies of
--max-seconds (default 600), endless replies of --max-bytes (64 MiB).
Standard library only. Run it in a network namespace of the test's own
(relay_world.py does).
"""

import argparse
import base64
import json
import select
import socket
import sys
import threading
import time

MODES = ("accept", "long-line", "endless", "ctl", "early", "tempfail", "reject", "tls-stall",
         "silent", "inject")
STAGES = ("banner", "ehlo", "mail", "rcpt", "data", "dot", "quit")
DEFAULT_AT = {
    "accept": None, "long-line": "ehlo", "endless": "ehlo", "ctl": "ehlo", "early": "mail",
    "tempfail": "rcpt", "reject": "banner", "tls-stall": "starttls", "silent": "banner",
    "inject": "rcpt",
}
INJECTED = [
    "first line of a multi-line reply",
    "\ntype: mda\ndispatcher: local\nmda-exec: /usr/bin/touch /tmp/smtpd-rs-injected",
    "\r\nSubject: injected\r\nX-Injected: yes",
    "rcpt: <victim@example.test>\nerrorline: 250 ok",
]
MAX_LINE = 1 << 20
MAX_MESSAGE = 64 << 20

# The normal reply to each stage.
NORMAL = {
    "banner": "220 {host} ESMTP hostile",
    "mail": "250 2.1.0 Ok",
    "rcpt": "250 2.1.5 Ok",
    "data": "354 End data with <CR><LF>.<CR><LF>",
    "dot": "250 2.0.0 Ok: queued",
    "quit": "221 2.0.0 Bye",
}


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1) if path else None
        self.lock = threading.Lock()

    def __call__(self, conn, ev, data=None, **kw):
        if self.f is None:
            return
        rec = {"t": round(time.time(), 6), "conn": conn, "ev": ev, **kw}
        if data is not None:
            rec["data"] = base64.b64encode(data).decode()
        with self.lock:
            self.f.write(json.dumps(rec) + "\n")


class Closed(Exception):
    pass


class Session:
    def __init__(self, sock, peer, conn, opts, log):
        self.sock, self.peer, self.conn, self.o, self.log = sock, peer, conn, opts, log
        self.buf = b""
        self.at = opts.at or DEFAULT_AT[opts.mode]
        self.mode = opts.mode
        self.rejected = False  # reject at the banner: 503 to all but QUIT

    # ---- I/O

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        self.log(self.conn, "send", data)
        self.sock.sendall(data)

    def reply(self, text):
        self.send(text.format(host=self.o.hostname) + "\r\n")

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                raise Closed("line too long")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("eof")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        self.log(self.conn, "recv", line)
        return line

    def read_data(self):
        data = self.buf
        self.buf = b""
        while True:
            if data.startswith(b".\r\n"):
                end = 0
                break
            end = data.find(b"\r\n.\r\n")
            if end >= 0:
                end += 2
                break
            if len(data) > MAX_MESSAGE:
                raise Closed("message too big")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("eof in DATA")
            data += chunk
        self.buf = data[end + 3:]
        self.log(self.conn, "message", data[:end])

    def stall(self, why):
        """Hold the connection without answering, logging what comes, until
        the client closes or --max-seconds."""
        self.log(self.conn, "stall", why.encode())
        deadline = time.monotonic() + self.o.max_seconds
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], 1.0)
            if r:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise Closed("eof while stalled")
                self.log(self.conn, "tls" if why == "starttls" else "recv-stalled", chunk)
        raise Closed("stall timed out")

    # ---- replies

    def ehlo_reply(self):
        lines = [self.o.hostname, "PIPELINING", "8BITMIME", "SIZE 36700160"]
        if self.mode == "tls-stall" or self.o.starttls:
            lines.append("STARTTLS")
        lines.append("ENHANCEDSTATUSCODES")
        return "\r\n".join(("250 " if i == len(lines) - 1 else "250-") + l for i, l in enumerate(lines))

    def normal(self, stage):
        return self.ehlo_reply() if stage == "ehlo" else NORMAL[stage]

    def code(self, stage, default=None):
        if self.o.code:
            return self.o.code
        if default:
            return default
        return {"banner": "220", "data": "354"}.get(stage, "250")

    def respond(self, stage):
        """Answer `stage`: normally, or as the mode says if it is the stage
        to misbehave at."""
        if stage != self.at or self.mode in ("accept", "early", "tls-stall"):
            self.reply(self.normal(stage))
            self.early_after(stage)
            if stage == "quit":
                raise Closed("quit")
            return
        m = self.mode
        if m == "long-line":
            # A long first line, then the normal reply.
            self.send(f"{self.code(stage)}-" + "x" * self.o.size + "\r\n")
            self.reply(self.normal(stage))
        elif m == "endless":
            c = self.code(stage)
            chunk = (f"{c}-endless multi-line reply\r\n" * 256).encode()
            sent, deadline = 0, time.monotonic() + self.o.max_seconds
            self.log(self.conn, "stall", b"endless")
            while sent < self.o.max_bytes and time.monotonic() < deadline:
                self.sock.sendall(chunk)
                sent += len(chunk)
            raise Closed("endless reply bounded")
        elif m == "ctl":
            c = self.code(stage)
            self.send(f"{c}-bare\rCR inside\r\n{c}-NUL\0inside\r\n{c}-bare\nLF inside\r\n")
            self.reply(self.normal(stage))
        elif m == "tempfail":
            self.reply(f"{self.code(stage, '421')} 4.3.2 hostile: closing in the middle")
            raise Closed("tempfail")
        elif m == "reject":
            self.reply(f"{self.code(stage, '554')} 5.7.1 hostile: refused")
            if stage == "banner":
                self.rejected = True
        elif m == "silent":
            self.stall("silent")
        elif m == "inject":
            c = self.code(stage, "553")
            lines = self.o.text or INJECTED
            out = "".join(f"{c}-{l}\r\n" for l in lines) + f"{c} 5.0.0 hostile: see above\r\n"
            self.send(out)
        if stage == "quit":
            raise Closed("quit")

    def early_after(self, stage):
        """In mode early: after answering the stage before --at, answer
        --at too, before its command is sent."""
        if self.mode != "early":
            return
        i = STAGES.index(self.at)
        if i > 0 and STAGES[i - 1] == stage:
            self.reply(f"{self.code(self.at)} 2.0.0 hostile: early reply to a command not sent yet")

    # ---- the session

    def run(self):
        self.respond("banner")
        in_tx = False
        while True:
            line = self.line()
            verb = line.split(b" ", 1)[0].upper()
            if self.rejected and verb != b"QUIT":
                self.reply("503 5.5.1 hostile: no service")
                continue
            if verb in (b"EHLO", b"HELO"):
                if verb == b"HELO" and self.at != "ehlo":
                    self.reply(f"250 {self.o.hostname}")
                else:
                    self.respond("ehlo")
            elif verb == b"MAIL":
                in_tx = True
                self.respond("mail")
            elif verb == b"RCPT":
                self.respond("rcpt")
            elif verb == b"DATA":
                self.respond("data")
                if self.at == "data" and self.mode in ("reject", "inject"):
                    continue  # no 354: no message follows
                self.read_data()
                in_tx = False
                self.respond("dot")
            elif verb == b"STARTTLS":
                if self.mode == "tls-stall":
                    self.reply("220 2.0.0 Ready to start TLS")
                    self.stall("starttls")
                self.reply("454 4.7.0 TLS not available")
            elif verb in (b"RSET", b"NOOP"):
                in_tx = in_tx and verb == b"NOOP"
                self.reply("250 2.0.0 Ok")
            elif verb == b"QUIT":
                self.respond("quit")
            else:
                self.reply("502 5.5.2 Error: command not recognized")


def serve(sock, opts, log, counter):
    while True:
        conn, peer = sock.accept()
        with counter[1]:
            counter[0] += 1
            n = counter[0]
        threading.Thread(target=session, args=(conn, peer, n, opts, log), daemon=True).start()


def session(conn, peer, n, opts, log):
    log(n, "connect", peer=str(peer[0]), port=peer[1])
    why = "closed"
    try:
        conn.settimeout(opts.max_seconds)
        Session(conn, peer, n, opts, log).run()
    except Closed as e:
        why = str(e)
    except OSError as e:
        why = f"error: {e}"
    finally:
        log(n, "close", reason=why)
        try:
            conn.close()
        except OSError:
            pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=MODES, default="accept")
    ap.add_argument("--at", choices=STAGES, help="the stage to misbehave at")
    ap.add_argument("--listen", action="append", default=[], help="address (repeatable)")
    ap.add_argument("--port", type=int, default=25)
    ap.add_argument("--log", help="JSON-lines log of every event")
    ap.add_argument("--hostname", default="hostile.test")
    ap.add_argument("--code", help="the reply code to misbehave with")
    ap.add_argument("--size", type=int, default=8192, help="long-line: bytes in the line")
    ap.add_argument("--text", action="append", help="inject: a line of the reply (repeatable)")
    ap.add_argument("--starttls", action="store_true", help="offer STARTTLS (and refuse it)")
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--max-bytes", type=int, default=64 << 20)
    opts = ap.parse_args(argv)
    if opts.text:
        opts.text = [t.encode().decode("unicode_escape") for t in opts.text]
    log = Log(opts.log)
    counter = [0, threading.Lock()]
    socks = []
    for addr in opts.listen or ["127.0.0.1"]:
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, opts.port))
        s.listen(64)
        socks.append(s)
    print(f"hostile_smtp: {opts.mode} at {opts.at or DEFAULT_AT[opts.mode]} on "
          f"{', '.join(opts.listen or ['127.0.0.1'])} port {opts.port}", flush=True)
    threads = [threading.Thread(target=serve, args=(s, opts, log, counter), daemon=True) for s in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    sys.exit(main())
