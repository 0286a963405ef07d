"""Dynamic batching, group-aware: one worker thread runs the model on micro-batches merged from every
request that is waiting.

A GRPO step sends G completions of each prompt, often split over several requests and several clients.
Each request is cut into pieces (reward/serve/engine.py); the worker takes the oldest piece and waits
up to `max_wait` for more, until the pieces waiting hold `max_batch_tokens` computed tokens; it then
takes pieces first come, first served, while they fit. Pieces with the same prompt key, from any
request, become one group of reward/fast/packed_scoring.py `group_rewards`: one segment [P | S1' | ...]
whose common prefix P is computed once (exact: each suffix sees P and itself, the padded forward's
rewards, tests/test_fast_eval.py). The micro-batch is one padding-free row; the rewards go back to each
piece's request, in its order.

The model runs only in this thread, so the event loop never waits on a forward; a request's `on_done`
is called from here (the app hands it to the event loop with `call_soon_threadsafe`). A request whose
client went away is cancelled: its pieces still waiting are dropped. A forward that raises fails only
the requests of that micro-batch; the worker goes on.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import torch

from reward.fast.packed_scoring import computed_tokens, group_rewards, packs
from reward.serve.engine import Piece, Ticket


class QueueFull(Exception):
    """More completions waiting than `max_queue`: the server answers 503 with Retry-After."""


class Batcher:
    """The queue of pieces and the worker thread that scores them."""

    def __init__(
        self,
        model: torch.nn.Module,
        pad_token_id: int,
        max_batch_tokens: int,
        max_wait: float,
        max_queue: int,
        padding_free: bool = True,
        observe: Callable[[dict], None] | None = None,
    ):
        self.model, self.pad_token_id = model, pad_token_id
        self.max_batch_tokens, self.max_wait, self.max_queue = max_batch_tokens, max_wait, max_queue
        self.packed = packs(model, padding_free)
        self.padding_free = padding_free
        self.observe = observe or (lambda stats: None)  # reward/serve/telemetry.py records each micro-batch
        self.queue: deque[Piece] = deque()
        self.waiting = 0  # completions in the queue
        self.condition = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self.run, name="reward-serve-model", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, ticket: Ticket) -> None:
        """Queue a ticket's pieces (a ticket with none, every completion skipped, is done at once)."""
        if not ticket.pieces:
            ticket.on_done and ticket.on_done()
            return
        with self.condition:
            if self.stopping:
                raise QueueFull("the server is shutting down")
            if self.waiting + ticket.completions > self.max_queue:
                raise QueueFull(f"{self.waiting} completions are waiting (--max_queue {self.max_queue})")
            self.queue.extend(ticket.pieces)
            self.waiting += ticket.completions
            self.condition.notify()

    def cancel(self, ticket: Ticket) -> int:
        """Drop a ticket's pieces that are still waiting; returns how many completions were dropped."""
        with self.condition:
            ticket.cancelled = True
            dropped = [piece for piece in self.queue if piece.ticket is ticket]
            if dropped:
                self.queue = deque(piece for piece in self.queue if piece.ticket is not ticket)
                self.waiting -= sum(len(piece.sequences) for piece in dropped)
        return sum(len(piece.sequences) for piece in dropped)

    def stop(self, timeout: float | None = None) -> None:
        """Score what is queued, then end the worker."""
        with self.condition:
            self.stopping = True
            self.condition.notify()
        self.thread.join(timeout)

    def run(self) -> None:
        with torch.no_grad():  # grad mode is per thread: set here, where the forwards run
            while (batch := self.next_batch()) is not None:
                if batch:  # empty when every waiting piece was cancelled during the wait
                    self.score(batch)

    def next_batch(self) -> list[Piece] | None:
        """The next micro-batch (None once stopping with nothing queued): wait for a first piece, then up to
        `max_wait` after it arrived for `max_batch_tokens` to be waiting, then take pieces in order while
        they fit (always at least one)."""
        with self.condition:
            while not self.queue and not self.stopping:
                self.condition.wait()
            if not self.queue:
                return None
            deadline = self.queue[0].ticket.arrived + self.max_wait
            while not self.stopping and (left := deadline - time.monotonic()) > 0:
                if sum(piece.cost for piece in self.queue) >= self.max_batch_tokens:
                    break
                self.condition.wait(left)
            batch, cost, keys = [], 0, set()
            while self.queue:
                piece = self.queue[0]
                extra = piece.cost - (piece.prefix if piece.key is not None and piece.key in keys else 0)
                if batch and cost + extra > self.max_batch_tokens:
                    break
                batch.append(self.queue.popleft())
                cost, keys = cost + extra, keys | {piece.key}
            self.waiting -= sum(len(piece.sequences) for piece in batch)
            return batch

    def score(self, batch: list[Piece]) -> None:
        """One forward for the micro-batch; each piece's rewards back to its ticket."""
        groups: dict[object, list[Piece]] = {}
        for piece in batch:  # one group per prompt key; a piece without a key stays on its own
            groups.setdefault(piece.key if piece.key is not None else id(piece), []).append(piece)
        merged = [[ids for piece in pieces for ids in piece.sequences] for pieces in groups.values()]
        started = time.perf_counter()
        try:
            rewards = group_rewards(self.model, merged, self.pad_token_id, self.padding_free).tolist()  # (S,)
        except Exception as exc:  # noqa: BLE001 - a failed forward fails its requests, not the server
            tickets = list({id(piece.ticket): piece.ticket for piece in batch}.values())
            if len(tickets) > 1:  # whose input failed it? each request again on its own: only that one fails
                for ticket in tickets:
                    self.score([piece for piece in batch if piece.ticket is ticket])
                return
            self.cancel(tickets[0])  # its other pieces, still queued, are not scored either
            tickets[0].fail(exc)
            tickets[0].on_done and tickets[0].on_done()
            return
        requested = sum(len(ids) for group in merged for ids in group)
        self.observe(
            {
                "sequences": len(rewards),
                "groups": len(merged),
                "requests": len({id(piece.ticket) for piece in batch}),
                "tokens_requested": requested,
                "tokens_computed": computed_tokens(merged, self.packed),
                "seconds": time.perf_counter() - started,
            }
        )
        at = 0
        for pieces in groups.values():
            for piece in pieces:
                values, at = rewards[at : at + len(piece.sequences)], at + len(piece.sequences)
                if piece.ticket.finish(piece, values) and piece.ticket.on_done:
                    piece.ticket.on_done()
