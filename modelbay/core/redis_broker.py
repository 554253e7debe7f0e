"""The Redis broker (``redis://`` in CELERY_BROKER_URL): kombu's transport, surviving a
broker restart.

When a worker loses its broker, Celery 5.7 first lets go of the connection's transport
(``Connection.collect()``) and then closes the connection; closing the channel tries to
put the worker's unacknowledged messages back, needs a Redis client for that, and finds
no transport to make one from: ``AttributeError: 'NoneType' object has no attribute
'hostname'``, which ends the worker ("Unrecoverable error") instead of reconnecting.
With ``CELERY_TASK_ACKS_LATE`` a task is unacknowledged while it runs, so a broker restart
during a deploy killed the worker. Here the restore is skipped when there is no broker to
restore to: the messages stay in Redis' unacked set and come back after the visibility
timeout (and beat's periodic reconcile does not wait for them).
"""

from kombu.transport import TRANSPORT_ALIASES, redis


class QoS(redis.QoS):
    def _let_go(self) -> bool:
        """The connection (or its channel) was let go of after a broker outage: nothing to
        talk to."""
        connection = self.channel.connection
        return connection is None or connection.client is None

    def restore_unacked(self, client=None):
        if client is None and self._let_go():
            return
        return super().restore_unacked(client)

    def ack(self, delivery_tag):
        if self._let_go():  # a task that ends after the outage: Redis redelivers it later
            self._quick_ack(delivery_tag)
            return
        super().ack(delivery_tag)


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel


TRANSPORT_ALIASES["redis"] = "modelbay.core.redis_broker:Transport"
