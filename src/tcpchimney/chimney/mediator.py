"""The ``Chimney`` mediator: the one place host and targets meet (the role NDIS plays).

API CONTRACT (stable; host and targets are written against it):

  chimney = Chimney(scheduler, tracer=None, on_violation="raise"|"record")
  chimney.bind_host(host)                         -> None
  chimney.register_target(target)                 -> int  (target_id; calls target.bind(chimney, target_id))
  chimney.unregister_target(target_id)
  chimney.query_capabilities(target_id)           -> OffloadCapabilities   (OID_TCP_TASK_OFFLOAD)

  Host -> target (each returns None; completion arrives later via the host's on_*_complete):
  chimney.initiate_offload(target_id, tree)       NdisInitiateOffload
  chimney.terminate_offload(target_id, tree)      NdisTerminateOffload
  chimney.update_offload(target_id, tree)         NdisUpdateOffload
  chimney.invalidate_offload(target_id, tree)     NdisInvalidateOffload
  chimney.query_offload(target_id, tree)          NdisQueryOffloadState
  chimney.tcp_send(handle, nbls)                  NdisOffloadTcpSend
  chimney.tcp_receive(handle, nbls)               NdisOffloadTcpReceive (receive post)
  chimney.tcp_receive_return(handle, nbls)        NdisOffloadTcpReceiveReturn
  chimney.tcp_disconnect(handle, nbl, flags)      NdisOffloadTcpDisconnect
  chimney.tcp_forward(handle, nbls)               NdisOffloadTcpForward
  chimney.send_frame(target_id, frame)            ordinary send (NdisSendNetBufferLists)

  Target -> host:
  chimney.initiate_offload_complete(target_id, tree)      NdisMInitiateOffloadComplete
  chimney.terminate_offload_complete(target_id, tree)     NdisMTerminateOffloadComplete
  chimney.update_offload_complete(target_id, tree)        NdisMUpdateOffloadComplete
  chimney.invalidate_offload_complete(target_id, tree)    NdisMInvalidateOffloadComplete
  chimney.query_offload_complete(target_id, tree)         NdisMQueryOffloadStateComplete
  chimney.tcp_send_complete(handle, nbls)                 NdisTcpOffloadSendComplete
  chimney.tcp_receive_complete(handle, nbls)              NdisTcpOffloadReceiveComplete
  chimney.tcp_disconnect_complete(handle, nbl)            NdisTcpOffloadDisconnectComplete
  chimney.tcp_forward_complete(handle, nbls)              NdisTcpOffloadForwardComplete
  chimney.tcp_event(handle, event_type, info)             NdisTcpOffloadEventHandler
  chimney.tcp_receive_indicate(handle, nbl) -> (status, bytes_consumed)   NdisTcpOffloadReceiveHandler
  chimney.indicate_status(target_id, status, info=None)  NdisMIndicateStatusEx (PAUSE/UPLOAD_ALL/RESUME/LINK_STATE)
  chimney.offload_event(target_id, block, code)           NdisMOffloadEventIndicate
  chimney.indicate_receive_frame(target_id, frame)        NdisMIndicateReceiveNetBufferLists

  Introspection: chimney.violations (list[ContractViolation]), chimney.stats (dict of counters),
  chimney.object_state(handle) -> str ("offloading"|"offloaded"|"terminating"|None),
  chimney.paused(target_id) -> bool, chimney.check_quiescent() -> None (raises if an operation never completed).
"""

from __future__ import annotations
