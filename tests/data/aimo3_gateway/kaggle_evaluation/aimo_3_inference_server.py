"""A stand-in for AIMO3's ``kaggle_evaluation.aimo_3_inference_server``, written for aimo-gguf's tests.

It does to a submission what the competition's package does, over real gRPC on
localhost, so a notebook that runs here runs there:

- ``AIMO3InferenceServer(*listeners)`` takes only plain functions
  (``types.FunctionType``; a bound method or a lambda is a ValueError, with the
  relay's wording) and routes each call by the function's ``__name__``;
- ``run_local_gateway((csv,))`` reads the CSV with polars, shuffles its rows,
  and for each row calls ``predict`` with every column as a one-row polars
  Series (sent as Parquet, read back on the server side, so names and dtypes
  are what the real relay delivers), from the server's one worker thread;
- the reply must be a polars or pandas DataFrame or Series, or a scalar, of one
  row (the gateway's row-count check); anything else fails the run;
- the replies are concatenated, the row ids put first, and the result written
  to ``submission.parquet`` in the working directory;
- ``serve()`` starts the server and, under ``KAGGLE_IS_COMPETITION_RERUN``,
  blocks until it ends.
"""

from __future__ import annotations

import io
import json
import os
from concurrent import futures
from types import FunctionType

import grpc
import pandas as pd
import polars as pl

_METHOD = "/kaggle_evaluation_standin.Relay/Send"


class GatewayError(Exception):
    """The gateway's verdict on a run that failed (the real one raises GatewayRuntimeError)."""


def _check_listeners(listeners) -> dict:
    if not listeners:
        raise ValueError("Must pass at least one endpoint listener, e.g. `predict`")
    for func in listeners:
        if not isinstance(func, FunctionType):
            raise ValueError(f"Endpoint listeners passed to `serve` must be functions, got {type(func)}")
        if func.__name__ == "<lambda>":
            raise ValueError("Functions passed as endpoint listeners must be named")
    return {func.__name__: func for func in listeners}


def _encode_reply(value) -> bytes:
    """The reply as bytes: a tag and the payload, for the types the real relay allows."""
    buffer = io.BytesIO()
    if isinstance(value, pl.DataFrame):
        value.write_ipc_stream(buffer)
        return b"P" + buffer.getvalue()
    if isinstance(value, pl.Series):
        pl.DataFrame(value).write_parquet(buffer)
        return b"S" + buffer.getvalue()
    if isinstance(value, (pd.DataFrame, pd.Series)):
        pd.DataFrame(value).to_parquet(buffer, index=False)
        return (b"D" if isinstance(value, pd.DataFrame) else b"E") + buffer.getvalue()
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy scalar
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return b"J" + json.dumps(value).encode()
    raise TypeError(f"Type {type(value)} not supported for KaggleEvaluation.")


def _decode_reply(data: bytes):
    tag, body = data[:1], io.BytesIO(data[1:])
    if tag == b"P":
        return pl.read_ipc_stream(body)
    if tag == b"S":
        return pl.read_parquet(body).to_series()
    if tag == b"D":
        return pd.read_parquet(body)
    if tag == b"E":
        frame = pd.read_parquet(body)
        return frame[frame.columns[0]]
    return json.loads(body.getvalue())


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, listeners: dict) -> None:
        self.listeners = listeners

    def service(self, handler_call_details):
        if handler_call_details.method != _METHOD:
            return None
        return grpc.unary_unary_rpc_method_handler(self._send)

    def _send(self, request: bytes, context) -> bytes:
        header, _, body = request.partition(b"\n")
        name = header.decode()
        if name not in self.listeners:
            raise NotImplementedError(f"No listener for {name} was registered.")
        row = pl.read_parquet(io.BytesIO(body))
        columns = [row.get_column(c) for c in row.columns]  # one-row Series, named as the CSV's columns
        return _encode_reply(self.listeners[name](*columns))


class AIMO3InferenceServer:
    def __init__(self, *endpoint_listeners) -> None:
        listeners = _check_listeners(endpoint_listeners)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        self.server.add_generic_rpc_handlers((_Handler(listeners),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def serve(self) -> None:
        self.server.start()
        if os.getenv("KAGGLE_IS_COMPETITION_RERUN") is not None:
            self.server.wait_for_termination()

    def run_local_gateway(self, data_paths: tuple[str, ...] | None = None, *args, **kwargs) -> None:
        path = (data_paths or ("/kaggle/input/ai-mathematical-olympiad-progress-prize-3/test.csv",))[0]
        self.server.start()
        try:
            _Gateway(self.port).run(path)
        finally:
            self.server.stop(0)


class _Gateway:
    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.send = self.channel.unary_unary(_METHOD)

    def run(self, path: str) -> None:
        test = pl.read_csv(path)
        test = test.sample(fraction=1.0, shuffle=True, seed=int.from_bytes(os.urandom(4), "big"))
        predictions, row_ids = [], []
        try:
            for row in test.iter_slices(n_rows=1):
                buffer = io.BytesIO()
                row.write_parquet(buffer)
                try:
                    reply = _decode_reply(self.send(b"predict\n" + buffer.getvalue()))
                except grpc.RpcError as e:
                    raise GatewayError(f"the server raised: {e.details()}") from None
                _check_rows(reply)
                predictions.append(reply)
                row_ids.append(row.select("id"))
        finally:
            self.channel.close()
        _write_submission(predictions, pl.concat(row_ids))


def _check_rows(reply) -> None:
    if reply is None:
        raise GatewayError("No prediction received")
    if isinstance(reply, (bool, int, float, str)):
        return
    if not isinstance(reply, (pl.DataFrame, pl.Series, pd.DataFrame, pd.Series)):
        raise GatewayError(f"Invalid prediction data type, received: {type(reply)}")
    if len(reply) != 1:
        raise GatewayError(f"Invalid predictions: expected 1 rows but received {len(reply)}")


def _write_submission(predictions: list, row_ids: pl.DataFrame) -> None:
    if not all(isinstance(p, pl.DataFrame) for p in predictions):
        raise GatewayError("this stand-in writes polars DataFrame replies only (what aimo-gguf returns)")
    try:
        submission = pl.concat(predictions, how="vertical_relaxed")
    except pl.exceptions.SchemaError:
        raise GatewayError("Inconsistent prediction types") from None
    submission = submission.with_columns(row_ids)
    order = row_ids.columns + [c for c in submission.columns if c not in row_ids.columns]
    submission.select(order).write_parquet("submission.parquet")
