# A tiny DNS server for tests: answers every A query on UDP port 53 with the address
# given on the command line (TTL 60), and NXDOMAIN for names ending in ".missing".
import socket, struct, sys
addr = socket.inet_aton(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
s.settimeout(60)
while True:
    try:
        q, peer = s.recvfrom(4096)
    except socket.timeout:
        break
    if len(q) < 12:
        continue
    qid, flags, qd = struct.unpack("!HHH", q[:6])
    # The question: labels up to the root, then type and class.
    i, labels = 12, []
    while i < len(q) and q[i] != 0:
        labels.append(q[i + 1:i + 1 + q[i]].decode(errors="replace"))
        i += 1 + q[i]
    qend = i + 5
    question = q[12:qend]
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0] if qend <= len(q) else 0
    name = ".".join(labels)
    rd = flags & 0x0100
    if name.endswith(".missing"):
        s.sendto(struct.pack("!HHHHHH", qid, 0x8183 | rd, 1, 0, 0, 0) + question, peer)
    elif qtype == 1:
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + addr
        s.sendto(struct.pack("!HHHHHH", qid, 0x8180 | rd, 1, 1, 0, 0) + question + answer, peer)
    else:
        s.sendto(struct.pack("!HHHHHH", qid, 0x8180 | rd, 1, 0, 0, 0) + question, peer)
