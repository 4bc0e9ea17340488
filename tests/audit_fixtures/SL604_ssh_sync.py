"""SL604 ssh-sync: paramiko."""

import asyncssh
import paramiko


class Deployer:
    def __init__(self) -> None:
        self.ssh = paramiko.SSHClient()

    async def deploy(self, host: str) -> None:
        self.ssh.connect(host)  # expect: SL604
        self.ssh.exec_command("uptime")  # expect: SL604
        sftp = self.ssh.open_sftp()  # expect: SL604
        sftp.put("a", "b")  # expect: SL604
        self.ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # ok: no I/O


async def negatives(host: str) -> None:
    async with asyncssh.connect(host) as conn:  # ok: asyncssh
        await conn.run("uptime")  # ok: awaited
    client = paramiko.SSHClient()  # ok: no I/O yet
    keys = client.load_system_host_keys  # ok: not a call
    del keys


def sync_code(host: str) -> None:
    paramiko.SSHClient().connect(host)  # ok: not async code
