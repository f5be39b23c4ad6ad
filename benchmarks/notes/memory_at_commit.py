"""Memory per unit parked at the start of AsyncSession.commit (uow: inside its ending, the `_to_completion` task)."""
import asyncio, gc, sys, tracemalloc
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from benchmarks.common import Base, async_factory, postgres_database
from benchmarks.concurrency import Gate, units
from uow import Database

GATE = None
orig = AsyncSession.commit
async def parked_commit(self):
    if GATE is not None:
        await GATE.hold(self)
    return await orig(self)
AsyncSession.commit = parked_commit

async def measure(unit, level, traced=True):
    global GATE
    GATE = Gate(level); gc.collect()
    if traced: tracemalloc.start(25)
    b = tracemalloc.get_traced_memory()[0]; s0 = tracemalloc.take_snapshot() if traced else None
    ts = [asyncio.ensure_future(unit()) for _ in range(level)]
    await GATE.all_in.wait(); gc.collect(); d = tracemalloc.get_traced_memory()[0]
    s1 = tracemalloc.take_snapshot() if traced else None
    if traced: tracemalloc.stop()
    GATE.release.set(); await asyncio.gather(*ts); GATE = None
    return (d - b) / level, s0, s1

async def main():
    level = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with postgres_database() as url:
        engine = create_async_engine(url, pool_size=8, max_overflow=16)
        async with engine.begin() as c:
            await c.run_sync(Base.metadata.create_all)
        factory = async_factory(engine); db = Database(session_factory=factory)
        made = units(factory, db)
        # no SQL before the commit: a unit that only builds its service (the rows would need connections)
        from benchmarks.common import AsyncItems
        from uow import with_services
        async def hand():
            async with factory() as session:
                AsyncItems(session)
                await session.commit()
        @with_services(AsyncItems, database=db)
        async def deco(items: AsyncItems):
            pass
        res = {}
        for name, u in (("hand-written", hand), ("@with_services", deco)):
            await measure(u, level, False); await measure(u, level, False)
            vals = [await measure(u, level) for _ in range(2)]
            res[name] = min(vals, key=lambda v: v[0])
        hw, me = res["hand-written"][0], res["@with_services"][0]
        print(f"parked at commit, level {level}: hand-written {hw:,.0f}  @with_services {me:,.0f}  ratio {me / hw:.3f} (+{me - hw:,.0f})")
        if "--lines" in sys.argv:
            for name in res:
                _, s0, s1 = res[name]
                print("==", name)
                for st in s1.compare_to(s0, "lineno")[:25]:
                    if st.size_diff / level >= 20:
                        f = st.traceback[0]
                        print(f"  {st.size_diff / level:7.0f} B {st.count_diff / level:5.2f}  {'/'.join(f.filename.split('/')[-2:])}:{f.lineno}")
        await engine.dispose()
asyncio.run(main())
