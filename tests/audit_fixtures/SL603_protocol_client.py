# ruff: noqa
"""SL603 protocol-client: stdlib SMTP, FTP, IMAP, POP3 clients."""

import ftplib
import smtplib
from smtplib import SMTP

import aiosmtplib

from steadyloop import run_blocking


async def positives(msg: object) -> None:
    with smtplib.SMTP("mail.example.com", 587) as smtp:  # expect: SL603
        smtp.starttls()  # expect: SL603
        smtp.send_message(msg)  # expect: SL603
    ftp = ftplib.FTP("ftp.example.com")  # expect: SL603
    ftp.retrlines("LIST")  # expect: SL603


async def negatives(msg: object) -> None:
    client = SMTP()  # ok: no host, no connection yet
    client.set_debuglevel(1)  # ok: no I/O
    await aiosmtplib.send(msg, hostname="mail")  # ok: async client
    await run_blocking("net", smtplib.SMTP, "mail.example.com")  # ok: handed to a bulkhead
