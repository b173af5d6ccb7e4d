//go:build !linux

package relay

import "net"

// newFlowSocket: only Linux shows delivery and takes a pacing rate.
func newFlowSocket(net.Conn) flowSocket { return nil }
