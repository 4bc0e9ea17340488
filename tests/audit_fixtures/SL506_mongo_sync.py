"""SL506 mongo-sync: queries of a sync pymongo client."""

import motor.motor_asyncio
import pymongo
from pymongo import MongoClient

client = MongoClient("mongodb://db:27017")
users = client.app.users


async def positives(user_id: str) -> None:
    client.app.users.find_one({"_id": user_id})  # expect: SL506
    users.insert_one({"name": "a"})  # expect: SL506
    client["app"]["orders"].update_many({}, {"$set": {"x": 1}})  # expect: SL506
    client.admin.command("ping")  # expect: SL506
    local = pymongo.MongoClient()
    local.list_database_names()  # expect: SL506
    local.get_database("app").get_collection("users").count_documents({})  # expect: SL506


async def negatives() -> None:
    users.find({"active": True})  # ok: a lazy cursor, no I/O until iterated
    client.get_database("app")  # ok: no I/O
    fast = motor.motor_asyncio.AsyncIOMotorClient()
    await fast.app.users.find_one({})  # ok: motor, awaited
    MongoClient("mongodb://db")  # ok: connects in the background


def sync_code() -> None:
    users.find_one({})  # ok: not async code
