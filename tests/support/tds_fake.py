"""A fake SQL Server on loopback, speaking as much TDS (MS-TDS) as the sqlserver driver's
checks and discovery use. No SQL Server can be installed here (see
test_driver_sqlserver.py).

It holds to SQL Server's side of the protocol where the driver relies on it: PRELOGIN
without encryption; LOGIN7 answered with LOGINACK; each SQL batch answered with a result
set, an error or DONE; an ATTENTION answered with DONE carrying the attention flag, after
which the batch it interrupted is over; SET ROWCOUNT and SET TEXTSIZE obeyed; BEGIN
TRANSACTION, COMMIT and ROLLBACK counted in @@TRANCOUNT; and
sys.dm_exec_describe_first_result_set, which describes the columns of a statement the fake
has an answer for (in its own row: the error of a statement it answers with one, and no
row for a statement it has no result for). It keeps every batch it received, so a test
can tell what reached the server.

Canned answers: ``results`` maps a batch's exact text to columns and rows (int, bit and
nvarchar(max) columns; other types can only be described); ``errors`` maps it to a server
error (number and message); a batch in ``stalled`` is never answered, as a long query
would not be, until the client sends an attention or hangs up.

It does not evaluate SQL: what a catalog query or a statement returns is what the test
says it returns.
"""

from __future__ import annotations

import asyncio
import re
import struct
from dataclasses import dataclass

from fake_tcp import FakeTcpServer

PRELOGIN, LOGIN7, SQL_BATCH, ATTENTION, REPLY = 0x12, 0x10, 0x01, 0x06, 0x04
END_OF_MESSAGE = 0x01
DONE_MORE, DONE_ERROR, DONE_COUNT, DONE_ATTENTION = 0x01, 0x02, 0x10, 0x20
ERROR_TOKEN = 0xAA
ERROR_SEVERITY = 16  # a statement's error: the batch ends, the session goes on
ENCRYPT_NOT_SUP = 2
TDS_7_4 = 0x74000004
PRODUCT_VERSION = 0x10000FA0  # 16.0.4000
PACKET_SIZE = 4096  # the client's default: larger packets would not fit its buffer
# Latin1_General_CI_AS: LCID 0x0409, its flags and sort order.
COLLATION = bytes([0x09, 0x04, 0xD0, 0x00, 0x34])
PLP_CHUNK = 8000

Value = int | bool | str | None
# Strings, quoted names and comments, which hold no statements (nested comments aside).
_CODE_ONLY = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\[[^\]]*\]|--[^\n]*|/\*.*?\*/", re.DOTALL
)
# SELECT <columns of the function> FROM sys.dm_exec_describe_first_result_set(N'<sql>', ...
_DESCRIBE = re.compile(
    r"SELECT (?P<columns>.+?) FROM sys\.dm_exec_describe_first_result_set\("
    r"N'(?P<statement>(?:[^']|'')*)'",
    re.DOTALL,
)
# sys.types' system_type_id of the types the fake describes.
SYSTEM_TYPE_IDS = {"int": 56, "bit": 104, "nvarchar(max)": 231, "xml": 241}
# The function's integer columns; the others the fake answers are text.
_DESCRIBE_INTEGERS = {"column_ordinal", "system_type_id", "error_number"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # "int", "bit" or "nvarchar(max)"; SYSTEM_TYPE_IDS for the describable ones


@dataclass(frozen=True)
class ResultSet:
    columns: tuple[Column, ...]
    rows: tuple[tuple[Value, ...], ...]


def _ucs2(text: str) -> bytes:
    return text.encode("utf-16-le")


def _token_done(status: int = 0, rows: int = 0) -> bytes:
    return struct.pack("<BHHQ", 0xFD, status, 0, rows)


def _token_error(number: int, message: str) -> bytes:
    text = struct.pack("<H", len(message)) + _ucs2(message)
    server = bytes([len("fake")]) + _ucs2("fake")
    body = struct.pack("<iBB", number, 1, ERROR_SEVERITY) + text + server + b"\x00"
    body += struct.pack("<i", 1)  # line number
    return struct.pack("<BH", ERROR_TOKEN, len(body)) + body


def _column_metadata(columns: tuple[Column, ...]) -> bytes:
    body = struct.pack("<BH", 0x81, len(columns))
    for column in columns:
        body += struct.pack("<IH", 0, 0x0001)  # user type, nullable
        if column.type == "int":
            body += bytes([0x26, 4])  # INTN(4)
        elif column.type == "bit":
            body += bytes([0x68, 1])  # BITN(1)
        elif column.type == "nvarchar(max)":
            body += bytes([0xE7]) + struct.pack("<H", 0xFFFF) + COLLATION  # NVARCHAR(MAX)
        else:
            raise ValueError(f"the fake cannot send {column.type} values")
        body += bytes([len(column.name)]) + _ucs2(column.name)
    return body


def _value(column: Column, value: Value, text_size: int | None) -> bytes:
    if column.type == "int":
        return b"\x00" if value is None else struct.pack("<Bi", 4, int(value))
    if column.type == "bit":
        return b"\x00" if value is None else struct.pack("<BB", 1, int(bool(value)))
    if value is None:
        return struct.pack("<Q", 0xFFFFFFFFFFFFFFFF)
    data = _ucs2(str(value))
    if text_size is not None:  # SET TEXTSIZE: large values are cut to so many bytes
        data = data[: text_size - text_size % 2]
    chunks = b"".join(
        struct.pack("<I", len(data[i : i + PLP_CHUNK])) + data[i : i + PLP_CHUNK]
        for i in range(0, len(data), PLP_CHUNK)
    )
    return struct.pack("<Q", len(data)) + chunks + struct.pack("<I", 0)


def _login_ack() -> bytes:
    name = _ucs2("Microsoft SQL Server")
    body = struct.pack(">BIB", 1, TDS_7_4, len(name) // 2) + name
    body += struct.pack(">I", PRODUCT_VERSION)
    return struct.pack("<BH", 0xAD, len(body)) + body


def _prelogin_reply() -> bytes:
    options = 2 * 5 + 1  # two option entries and the terminator
    return (
        struct.pack(">BHH", 0x00, options, 6)  # VERSION
        + struct.pack(">BHH", 0x01, options + 6, 1)  # ENCRYPTION
        + b"\xff"
        + struct.pack(">LH", PRODUCT_VERSION, 0)
        + bytes([ENCRYPT_NOT_SUP])
    )


@dataclass
class Session:
    """What SQL Server keeps per connection, as far as the fake needs it."""

    tran_count: int = 0
    row_count: int = 0  # SET ROWCOUNT: 0 is no limit
    text_size: int | None = None


class FakeSqlServer(FakeTcpServer):
    def __init__(
        self,
        results: dict[str, ResultSet] | None = None,
        stalled: set[str] | None = None,
        host: str = "127.0.0.1",
        errors: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        super().__init__(host)
        self.results = results or {}
        self.stalled = stalled or set()
        self.errors = errors or {}
        self.batches: list[str] = []
        self.attentions = 0
        self.largest_reply = 0

    async def _message(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        """One client message: its type and payload (the packets of a message joined)."""
        payload = b""
        while True:
            header = await reader.readexactly(8)
            kind, status, length = struct.unpack(">BBH", header[:4])
            payload += await reader.readexactly(length - 8)
            if status & END_OF_MESSAGE:
                return kind, payload

    async def _reply(self, writer: asyncio.StreamWriter, payload: bytes) -> None:
        self.largest_reply = max(self.largest_reply, len(payload))
        size = PACKET_SIZE - 8
        for start in range(0, max(len(payload), 1), size):
            last = start + size >= len(payload)
            chunk = payload[start : start + size]
            status = END_OF_MESSAGE if last else 0
            writer.write(struct.pack(">BBHHBB", REPLY, status, len(chunk) + 8, 0, 1, 0) + chunk)
        await writer.drain()

    def _answer(self, session: Session, batch: str) -> bytes:
        """The reply to a batch that is answered at once."""
        if match := re.search(r"SET ROWCOUNT (\d+)", batch, re.IGNORECASE):
            session.row_count = int(match.group(1))
        if match := re.search(r"SET TEXTSIZE (\d+)", batch, re.IGNORECASE):
            session.text_size = int(match.group(1))
        code = _CODE_ONLY.sub(" ", batch)
        for word in re.findall(r"\b(BEGIN TRAN|COMMIT|ROLLBACK)", code, re.IGNORECASE):
            upper = word.upper()
            if upper == "BEGIN TRAN":
                session.tran_count += 1
            elif upper == "COMMIT":
                session.tran_count = max(session.tran_count - 1, 0)
            else:
                session.tran_count = 0
        if batch.strip().upper() == "SELECT @@TRANCOUNT":
            result = ResultSet((Column("", "int"),), ((session.tran_count,),))
        elif described := _DESCRIBE.match(batch):
            result = self._description(described)
        elif batch in self.errors:
            return _token_error(*self.errors[batch]) + _token_done(DONE_ERROR)
        elif batch in self.results:
            result = self.results[batch]
        else:
            return _token_done()
        rows = result.rows[: session.row_count] if session.row_count else result.rows
        body = _column_metadata(result.columns)
        for row in rows:
            body += b"\xd1" + b"".join(
                _value(column, value, session.text_size)
                for column, value in zip(result.columns, row, strict=True)
            )
        return body + _token_done(DONE_COUNT, len(rows))

    def _description(self, call: re.Match[str]) -> ResultSet:
        """What sys.dm_exec_describe_first_result_set answers for the statement of ``call``,
        in the columns of the function its SELECT names."""
        names = [name.strip() for name in call.group("columns").split(",")]
        statement = call.group("statement").replace("''", "'")
        described: list[dict[str, Value]] = []
        if statement in self.errors:
            number, message = self.errors[statement]
            described.append({"error_number": number, "error_message": message})
        elif statement in self.results:
            for ordinal, column in enumerate(self.results[statement].columns, 1):
                described.append(
                    {
                        "column_ordinal": ordinal,
                        "name": column.name,
                        "system_type_name": column.type,
                        "system_type_id": SYSTEM_TYPE_IDS[column.type],
                    }
                )
        columns = tuple(
            Column(name, "int" if name in _DESCRIBE_INTEGERS else "nvarchar(max)") for name in names
        )
        return ResultSet(columns, tuple(tuple(row.get(n) for n in names) for row in described))

    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kind, _ = await self._message(reader)
        assert kind == PRELOGIN
        await self._reply(writer, _prelogin_reply())
        kind, _ = await self._message(reader)
        assert kind == LOGIN7
        await self._reply(writer, _login_ack() + _token_done())
        session = Session()
        while True:
            kind, payload = await self._message(reader)
            if kind == ATTENTION:  # nothing is running: acknowledge all the same
                self.attentions += 1
                await self._reply(writer, _token_done(DONE_ATTENTION))
                continue
            assert kind == SQL_BATCH
            headers_length = struct.unpack("<I", payload[:4])[0]  # ALL_HEADERS
            batch = payload[headers_length:].decode("utf-16-le")
            self.batches.append(batch)
            if batch not in self.stalled:
                await self._reply(writer, self._answer(session, batch))
                continue
            # A long query: the server answers only an attention, by ending the batch.
            kind, _ = await self._message(reader)
            assert kind == ATTENTION
            self.attentions += 1
            await self._reply(writer, _token_done(DONE_ATTENTION))
