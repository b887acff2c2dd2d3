package proxy

import "github.com/popbridge/popbridge/internal/pop3wire"

// The pass-through writer takes a message's last lines and the
// terminating line together from a WireWriterTo built on pop3wire.Body.
var _ pop3wire.EndWriter = (*passWriter)(nil)
