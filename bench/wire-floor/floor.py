#!/usr/bin/env python3
"""How few compressed bytes per event are possible for the benchmarks' events.

Rebuilds the sample the benchmarks draw from (`crates/trackway-samples`: `Traffic`, its
templates in `realistic/` filled with fresh values, from a population of 10,000 users drawn
Zipf-distributed with s = 1.1, each user with one userId and one anonymousId, in sessions of
3-12 events, 8 sessions interleaved), stamps each event as the library does (a random UUID
messageId, the time, `context.library`), cuts it into requests of 250 events (the client's
default batch; another size as the second argument), and prints:

- what deflate (levels 1, 6, 9), xz and, when the `zstd` command is installed, zstd (level
  3, its default) make of each request, per event;
- the entropy floor: the random content a request carries, per event. No compressor that
  sees one request at a time (with no dictionary shared beforehand) can write less.

The floor counts, per event: the messageId (122 random bits), which template (log2 98),
each placeholder's random bits (as `fill` draws them: a 16-hex-digit id 64 bits, a number
13.3, a name 5.4, ...), which of the 8 open sessions it belongs to (3 bits) and the time
stamp (1 bit: at the benchmark's rates consecutive stamps mostly share their millisecond).
Per session: its length (log2 10) and its user: the first time a user appears in a request,
their two ids (64 + 122 random bits); again in the same request, which of the users seen so
far (log2 of their number).

Usage: python3 bench/wire-floor/floor.py [EVENTS [REQUEST_EVENTS]]   (standard library; zstd
optional). `trackway bench` sends requests of about 1,000 events under its load.
"""
import bisect, json, lzma, math, pathlib, random, re, shutil, subprocess, sys, time, uuid, zlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
random.seed(42)
FILES = ['identify', 'track', 'track-extended', 'page', 'screen', 'group', 'ecommerce',
         'ecommerce-extended', 'mobile-spec', 'user-journey']
TEMPLATES = [l.strip() for f in FILES
             for l in open(ROOT / 'crates' / 'trackway-samples' / 'realistic' / f'{f}.jsonl')
             if l.strip()]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson"]
PRODUCTS = ["Men's 501 Jeans", "Trail Runner 2", "Espresso Maker", "Desk Lamp"]
DOMAINS = ["example.com", "shop.example.org", "news.example.net"]
USERS, ZIPF_S, SESSION = 10_000, 1.1, (3, 12)
OPEN_SESSIONS = 8
N = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
BATCH = int(sys.argv[2]) if len(sys.argv) > 2 else 250

bits = 0.0  # random bits of the placeholders filled so far


def val(name):
    """A placeholder's value, as trackway-samples' `fill` draws it, counting its bits."""
    global bits
    f = random.choice(FIRST); l = random.choice(LAST)
    table = {
        'id': (64, lambda: '%016x' % random.getrandbits(64)),
        'uuid': (122, lambda: str(uuid.UUID(int=random.getrandbits(128), version=4))),
        'now.utc': (0, lambda: '2026-12-07T17:00:00.000Z'),
        'double': (13.3, lambda: '%.2f' % (random.random() * 100)),
        'domain': (1.6, lambda: random.choice(DOMAINS)),
        'product.name': (2, lambda: random.choice(PRODUCTS)),
        'name': (5.4, lambda: f'{f} {l}'),
        'name.first': (2.8, lambda: f),
        'name.last': (2.6, lambda: l),
        'username': (12.8, lambda: f.lower() + str(random.randrange(1000))),
        'email': (5.4, lambda: f'{f.lower()}.{l.lower()}@example.com'),
        'avatar': (33.6, lambda: f'https://{random.choice(DOMAINS)}/avatars/{random.getrandbits(32)}.png'),
    }
    if name not in table:
        return name
    b, make = table[name]
    bits += b
    return make()


# The ids the client stamps or the user carries are not the template's to draw.
STAMPED = re.compile(r'"(messageId|userId|anonymousId|timestamp)": "\{\{[a-z.]+\}\}"')

users = [('%016x' % random.getrandbits(64), str(uuid.UUID(int=random.getrandbits(128), version=4)))
         for _ in range(USERS)]
weights = [k ** -ZIPF_S for k in range(1, USERS + 1)]
total = sum(weights)
cumulative = []
acc = 0.0
for w in weights:
    acc += w / total
    cumulative.append(acc)


def new_session():
    return [min(bisect.bisect_left(cumulative, random.random()), USERS - 1),
            random.randint(*SESSION)]


sessions = [new_session() for _ in range(OPEN_SESSIONS)]
events, floor_bits = [], 0.0
seen_in_batch = set()
t_ms = 1_796_000_000_000
for n in range(N):
    if n % BATCH == 0:
        seen_in_batch = set()
    s = random.randrange(OPEN_SESSIONS)
    user, _ = sessions[s]
    sessions[s][1] -= 1
    if sessions[s][1] == 0:
        sessions[s] = new_session()
    template = random.choice(TEMPLATES)
    before = bits
    text = STAMPED.sub(lambda m: f'"{m.group(1)}": "x"', template)
    text = re.sub(r'\{\{([a-z.]+)\}\}', lambda m: val(m.group(1)), text)
    v = json.loads(text)
    v.pop('messageId', None); v.pop('timestamp', None)
    uid, aid = users[user]
    if isinstance(v.get('userId'), str): v['userId'] = uid
    if isinstance(v.get('anonymousId'), str): v['anonymousId'] = aid
    # As the library stamps it.
    t_ms += random.randrange(2)
    v['messageId'] = str(uuid.uuid4())
    v['timestamp'] = '%s.%03dZ' % (
        time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(t_ms // 1000)), t_ms % 1000)
    v.setdefault('context', {})['library'] = {'name': 'trackway', 'version': '0.1.0'}
    events.append(json.dumps(v, separators=(',', ':')))
    # The floor.
    e = 122 + math.log2(len(TEMPLATES)) + (bits - before) + math.log2(OPEN_SESSIONS) + 1
    e += math.log2(SESSION[1] - SESSION[0] + 1) / ((SESSION[0] + SESSION[1]) / 2)
    if user in seen_in_batch:
        e += math.log2(len(seen_in_batch)) / ((SESSION[0] + SESSION[1]) / 2)
    else:
        e += 64 + 122
        seen_in_batch.add(user)
    floor_bits += e

raw = sum(len(e) for e in events) / N
print(f'{N} events; raw {raw:.1f} B/event; {USERS} users, Zipf s = {ZIPF_S}, requests of {BATCH}')


def bodies():
    for i in range(0, N, BATCH):
        yield ('{"batch":[' + ','.join(events[i:i + BATCH]) +
               '],"sentAt":"2026-12-07T17:00:00.000Z","writeKey":"bench-write-key"}').encode()


def per_event(compress):
    return sum(len(compress(b)) for b in bodies()) / N


floor = floor_bits / 8 / N
print(f'entropy floor: {floor:.1f} B/event (random content per request, per event)')
for lvl in (1, 6, 9):
    b = per_event(lambda body: zlib.compress(body, lvl))
    print(f'deflate level {lvl}: {b:.1f} B/event ({b / floor:.2f}x the floor)')
b = per_event(lambda body: lzma.compress(body, preset=9 | lzma.PRESET_EXTREME))
print(f'xz -9e per request: {b:.1f} B/event ({b / floor:.2f}x the floor)')
if shutil.which('zstd'):
    for lvl in (1, 3):
        b = per_event(lambda body: subprocess.run(['zstd', f'-{lvl}', '-c', '-q'], input=body,
                                                  capture_output=True, check=True).stdout)
        print(f'zstd -{lvl} (the command) per request: {b:.1f} B/event ({b / floor:.2f}x the floor)')
