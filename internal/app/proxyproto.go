package app

import (
	"net"
	"net/netip"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/internal/proxyproto"
)

// wrapProxyProtocol makes each of ls read the PROXY protocol header of
// connections from nets (listen.proxy_protocol), so that the servers see
// the client's address; nothing changes when nets is empty.
func wrapProxyProtocol(ls []listener, nets []netip.Prefix, log zerolog.Logger) {
	if len(nets) == 0 {
		return
	}
	for i := range ls {
		pl := proxyproto.New(ls[i].Listener, nets)
		name := ls[i].name
		pl.OnError = func(remote net.Addr, err error) {
			log.Warn().Str("listener", name).Str("remote", remote.String()).Err(err).
				Msg("connection closed: no valid PROXY protocol header from a listen.proxy_protocol network")
		}
		ls[i].Listener = pl
	}
}
