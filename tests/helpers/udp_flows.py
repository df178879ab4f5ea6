# Opens one UDP flow per source port to HOST:PORT (all at once) and prints how many
# got an echo back within two seconds.
# usage: udp_flows.py HOST PORT FIRST_SRC_PORT COUNT
import select, socket, sys, time
host, port, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
socks = []
for i in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", first + i))
    s.setblocking(False)
    socks.append(s)
    try:
        s.sendto(b"flow %d" % i, (host, port))
    except OSError:
        pass
answered = set()
deadline = time.time() + 2.0
while len(answered) < count and time.time() < deadline:
    r, _, _ = select.select([s for s in socks if s not in answered], [], [], 0.2)
    for s in r:
        try:
            s.recvfrom(2048)
            answered.add(s)
        except OSError:
            pass
print(len(answered))
