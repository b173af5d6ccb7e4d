//go:build !linux

package relay

import (
	"net"
	"time"
)

// Options of the seed's control connections: only Linux holds a frame for
// the close that follows it, or gives a connection up for want of
// acknowledgements (elsewhere a node heard by datagram whose side of the
// link is down is found when its datagrams stop).
func cork(net.Conn) bool { return false }

func giveUpAfter(net.Conn, time.Duration) bool { return false }
