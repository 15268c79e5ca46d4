"""A NOTIFY_SOCKET receiver, as systemd's manager has one: a unix datagram socket at argv[1].

Prints "LISTENING" once bound, then each datagram as one JSON string per line. recv() takes
no ancillary data, so the kernel closes any file descriptor a sender passes: that is how the
manager answers systemd-notify's barrier (it closes the descriptor once the messages before
it are read), so senders return at once instead of waiting out the barrier's timeout.
"""

import json
import socket
import sys

sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1])
print(json.dumps("LISTENING"), flush=True)
while True:
    print(json.dumps(sock.recv(65536).decode("utf-8", "replace")), flush=True)
