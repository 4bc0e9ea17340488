# ruff: noqa
"""SL505 sqlalchemy-sync: sync SQLAlchemy engines, connections and sessions."""

from fastapi import Depends
from sqlalchemy import create_engine, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, sessionmaker

from steadyloop import run_blocking

engine = create_engine("sqlite:///app.db")
SessionLocal = sessionmaker(bind=engine)


def get_db() -> Session: ...


async def list_users(db: Session = Depends(get_db)) -> object:
    return db.query(User).filter(User.active).all()  # expect: SL505


async def positives(obj: object) -> None:
    with engine.connect() as conn:  # expect: SL505
        conn.execute(text("SELECT 1"))  # expect: SL505
    session = SessionLocal()
    session.add(obj)  # ok: add() only stages the object
    session.commit()  # expect: SL505
    with Session(engine) as s:
        s.scalars(select(User)).all()  # expect: SL505


async def negatives(adb: AsyncSession) -> None:
    await adb.execute(select(User))  # ok: AsyncSession, awaited
    result = await adb.scalars(select(User))
    result.all()  # ok: a buffered result
    select(User).where(User.id == 1)  # ok: building a statement
    await run_blocking("db", engine.dispose)  # ok: handed to a bulkhead
