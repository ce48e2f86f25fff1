#!/usr/bin/env python3
"""How few gzip bytes per event are possible for `trackway bench`'s events.

Rebuilds a sample like the benchmark's (`crates/trackway-samples`: its templates in
`realistic/` filled with random ids, a pool of 1,024 cycled, a fresh UUID messageId per
event, batches of 250), then prints what deflate at several levels and xz
make of each batch, and the random content each event carries: no compressor working one
request at a time can write less than that.

Usage: python3 bench/wire-floor/floor.py   (standard library only)
"""
import json, lzma, pathlib, random, re, uuid, zlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
random.seed(42)
files = ['identify','track','track-extended','page','screen','group','ecommerce','ecommerce-extended','mobile-spec','user-journey']
templates = [l.strip() for f in files for l in open(ROOT / 'crates' / 'trackway-samples' / 'realistic' / f'{f}.jsonl') if l.strip()]
FIRST=["Ada","Grace","Alan","Edsger","Barbara","Ken","Margaret"]; LAST=["Lovelace","Hopper","Turing","Dijkstra","Liskov","Thompson"]
PRODUCTS=["Men's 501 Jeans","Trail Runner 2","Espresso Maker","Desk Lamp"]; DOMAINS=["example.com","shop.example.org","news.example.net"]
bits = 0.0
def val(name):
    global bits
    f=random.choice(FIRST); l=random.choice(LAST)
    if name=='id': bits_add(64); return '%016x'%random.getrandbits(64)
    if name=='uuid': bits_add(122); return str(uuid.UUID(int=random.getrandbits(128), version=4))
    if name=='now.utc': return '2026-11-26T17:00:00.%03dZ'%random.randrange(1000)
    if name=='double': bits_add(13.3); return '%.2f'%(random.random()*100)
    if name=='domain': bits_add(1.6); return random.choice(DOMAINS)
    if name=='product.name': bits_add(2); return random.choice(PRODUCTS)
    if name=='name': bits_add(5.4); return f'{f} {l}'
    if name=='name.first': bits_add(2.8); return f
    if name=='name.last': bits_add(2.6); return l
    if name=='username': bits_add(12.8); return f.lower()+str(random.randrange(1000))
    if name=='email': bits_add(5.4); return f'{f.lower()}.{l.lower()}@example.com'
    if name=='avatar': bits_add(33.6); return f'https://{random.choice(DOMAINS)}/avatars/{random.getrandbits(32)}.png'
    return name
def bits_add(b):
    global bits; bits += b
pool=[]
for n in range(1024):
    t = templates[n % len(templates)]
    s = re.sub(r'\{\{([a-z.]+)\}\}', lambda m: val(m.group(1)), t)
    v = json.loads(s); v.pop('messageId', None)
    pool.append(v)
pool_bits = bits
events=[]
N=25000
for n in range(N):
    v=dict(pool[n % 1024]); v['messageId']=str(uuid.uuid4())
    v.setdefault('context',{})
    events.append(json.dumps(v, separators=(',',':')))
raw=sum(len(e) for e in events)/N
print(f'raw {raw:.1f} B/event')
def batches(f):
    tot=0
    for i in range(0,N,250):
        body=('{"batch":['+','.join(events[i:i+250])+'],"sentAt":"2026-11-26T17:00:00.000Z","writeKey":"bench-write-key"}').encode()
        tot+=len(f(body))
    return tot/N
for lvl in (1,6,9):
    print(f'zlib level {lvl}: {batches(lambda b: zlib.compress(b,lvl)):.1f} B/event')
print(f'xz -9e per batch: {batches(lambda b: lzma.compress(b, preset=9|lzma.PRESET_EXTREME)):.1f} B/event')
allb=('['+','.join(events)+']').encode()
print(f'xz -9e over all {N} events at once (whole-stream context, the pool repeats): {len(lzma.compress(allb, preset=9|lzma.PRESET_EXTREME))/N:.1f} B/event')
# entropy floor: random bits per event = messageId (122 bits) + the pool's random placeholders
# Note: the bench cycles a pool of 1024, so a compressor with > ~430 KB of context could in principle
# reuse the pool; deflate's 32 KB window cannot.
per_event_pool_bits = pool_bits/1024
print(f'random content: messageId 122 bits + placeholders {per_event_pool_bits:.0f} bits = {(122+per_event_pool_bits)/8:.1f} bytes/event (the floor for any compressor that sees one request at a time)')
