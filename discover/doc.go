// Package discover finds treecast receivers on the LAN with multicast DNS
// service discovery (RFC 6762, RFC 6763).
//
// # Announce
//
// A receiver runs one mDNS responder per interface (see [Interfaces]) for the
// service type [Service] in the domain "local.". Its DNS-SD instance name is
//
//	<name>-<first 8 hex digits of its id>
//
// where <name> is the human name reduced to ASCII letters, digits and '-'
// (anything else becomes '-') and cut to 54 bytes, so the label stays within
// the 63-byte DNS limit and is unique per node even when names repeat. The
// SRV record points at the host name "<instance>.local.", which resolves to
// the IPv4 addresses of that interface only.
//
// The responder only answers queries: it announces nothing when it starts
// and sends no goodbye when it stops. A browser sees a receiver when it asks,
// and stops seeing it on the first query after [Announcer.Close].
//
// # TXT record
//
// The TXT record carries one "key=value" string per field:
//
//	v=<protocol version>   decimal, 1 or more; required
//	id=<node id>           32 lowercase hex digits; required
//	name=<human name>      UTF-8 without control characters; not unique
//	group=<group>          as name; omitted when the node is in no group
//	state=<state>          "idle" or "busy"
//
// Each string holds at most 255 bytes, so a name or group holds at most 255
// minus the key and '='. [Announce] refuses longer values instead of letting
// the responder fail to pack its answer. A browser treats every TXT record as
// hostile: it ignores unknown keys and strings without '=', keeps the first
// of repeated keys (keys are case-insensitive), reads at most 32 strings, and
// drops the peer when v or id is missing or malformed or a value holds
// control characters.
//
// # Browse
//
// [Browse] sends a PTR question for "_treecast._tcp.local." out of each
// interface in rounds of [Config.Round] and collects the unicast answers
// (SRV, TXT and A records) until it has enough peers at the end of a round,
// the wait is over, or the context ends. The query goes out of a socket tied
// to the interface with IP_MULTICAST_IF, so it needs no default route and no
// multicast route. Answers for other services are ignored, as are peers
// whose TXT record does not parse. A peer is reported once, by node id.
//
// Any host on the LAN can answer, so every answer is judged on its own: a
// later answer replaces what an earlier one said about a name, and the
// browser hears every answer to a round's query before it stops. A peer is
// found only at an IPv4 unicast address inside a subnet of the interface the
// query went out of: loopback addresses (unless the query went out of the
// loopback interface), link-local ones (unless the interface has a
// link-local subnet), unspecified, broadcast (a subnet's too, and its
// network address), multicast and off-subnet ones
// are dropped and logged at debug level. A node id given at two addresses
// during one browse is reported once, marked [Peer.Conflicted] with both:
// two machines share the id, or one spoofs it, and neither is to be
// trusted. At two ports of one address it is one machine whose receiver
// restarted (killed and run again, or restarted by its service manager)
// while the browse ran: the later answer is kept, as the one that listens.
//
// On Linux every socket bound to UDP port 5353 hears queries from every
// interface, so a receiver with several interfaces answers one query once per
// interface, each time with that interface's addresses. The browser keeps the
// answer with an address in a subnet of the interface it asked on. A seed on
// two of a receiver's subnets meets it at two addresses, a conflict: such a
// seed browses on one interface ([Config.Iface]).
//
// [Watch] browses again and again while a session runs. When browsing fails
// (the interface is gone, every query fails) it waits before the next try,
// 0.5 s doubling to 4 s, and logs when failing starts, changes cause or ends.
package discover
