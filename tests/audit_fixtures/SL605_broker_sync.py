"""SL605 broker-sync: pika, kafka-python and paho-mqtt."""

import paho.mqtt.client as mqtt
import paho.mqtt.publish as publish
import pika
from kafka import KafkaConsumer, KafkaProducer

producer = KafkaProducer  # the class, not an instance


async def positives(params: pika.ConnectionParameters) -> None:
    connection = pika.BlockingConnection(params)  # expect: SL605
    channel = connection.channel()  # expect: SL605
    channel.basic_publish(exchange="", routing_key="q", body=b"x")  # expect: SL605
    kafka = KafkaProducer(bootstrap_servers="k:9092")  # expect: SL605
    kafka.send("topic", b"x").get(timeout=10)  # expect: SL605
    kafka.flush()  # expect: SL605
    consumer = KafkaConsumer("topic")  # expect: SL605
    consumer.poll(timeout_ms=100)  # expect: SL605
    client = mqtt.Client()
    client.connect("broker")  # expect: SL605
    client.publish("t", "x").wait_for_publish()  # expect: SL605
    publish.single("t", "x", hostname="broker")  # expect: SL605


async def negatives() -> None:
    client = mqtt.Client()
    client.loop_start()  # ok: starts a thread
    client.connect_async("broker")  # ok: does not wait
    client.publish("t", "x")  # ok: queued
    channel = None
    channel.basic_ack(1)  # ok: unknown value


def sync_code() -> None:
    KafkaProducer().flush()  # ok: not async code
