# UDP echo on the ports given on the command line (test helper, runs in a namespace).
import select, socket, sys
socks = []
for p in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(p)))
    socks.append(s)
while True:
    r, _, _ = select.select(socks, [], [], 60)
    if not r:
        break
    for s in r:
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)
