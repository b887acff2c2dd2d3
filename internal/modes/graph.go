package modes

import (
	"strings"
	"time"
)

// DeletedItems moves the messages to the Deleted Items folder (graph).
const DeletedItems OnDelete = "deleteditems"

// The graph backend (Microsoft Graph: Outlook.com and Microsoft 365).
var (
	// GraphOnDelete are the graph delete policies; Move(FOLDER) stands
	// for any folder (a well-known name or a path). Archive moves to the
	// Archive folder, Delete is permanentDelete, MarkRead sets isRead.
	GraphOnDelete = List[OnDelete]{DeletedItems, Archive, Delete, MarkRead, Keep, Move("FOLDER")}
	// GraphTenants are the Microsoft tenants with a meaning of their own;
	// a tenant id (a GUID or a domain) is also accepted.
	GraphTenants = []string{"consumers", "organizations", "common"}
	// GraphScopes are the default OAuth2 scopes of the graph backend;
	// GraphSendScope is added when the account also sends through Graph.
	GraphScopes    = []string{"offline_access", "https://graph.microsoft.com/Mail.ReadWrite"}
	GraphSendScope = "https://graph.microsoft.com/Mail.Send"
	// GraphSendSharedScope sends as another user's or a shared mailbox.
	GraphSendSharedScope = "https://graph.microsoft.com/Mail.Send.Shared"
	// GraphSharedScopes are the default scopes for another user's or a
	// shared mailbox (mailbox set to an address).
	GraphSharedScopes = []string{"offline_access", "https://graph.microsoft.com/Mail.ReadWrite.Shared"}
)

// Defaults of the graph settings.
const (
	// DefaultGraphFolder is the folder served when none is set.
	DefaultGraphFolder        = "inbox"
	DefaultGraphEndpoint      = "https://graph.microsoft.com/v1.0"
	DefaultGraphMaxConcurrent = 4 // Graph's per-mailbox limit
	DefaultGraphCallTimeout   = 30 * time.Second
	DefaultGraphLoginWait     = 8 * time.Second
)

// GraphOnDeleteOK reports whether p is a graph delete policy: one of
// GraphOnDelete, or move: with a folder.
func GraphOnDeleteOK(p OnDelete) bool {
	if f, ok := p.MoveTarget(); ok {
		return strings.Trim(f, "/ ") != ""
	}
	return GraphOnDelete.Has(p)
}
