package modes

// The pop3 relay backend.
var (
	// POP3Auth are the credentials the pop3 backend can send.
	POP3Auth = List[Auth]{AuthPassword, AuthXOAUTH2, AuthPassthrough}
	// POP3OnDelete are the pop3 delete policies.
	POP3OnDelete = List[OnDelete]{Delete, Keep}
	// XOAUTH2Forms are the ways AUTH XOAUTH2 can be sent to a POP3 server.
	XOAUTH2Forms = List[XOAUTH2Form]{XOAUTH2OneLine, XOAUTH2TwoLine}
)

// XOAUTH2Form says how AUTH XOAUTH2 is sent to a POP3 server.
type XOAUTH2Form string

const (
	// XOAUTH2OneLine sends AUTH XOAUTH2 and the response on one line
	// (Gmail).
	XOAUTH2OneLine XOAUTH2Form = "one-line"
	// XOAUTH2TwoLine sends AUTH XOAUTH2, then the response after "+ "
	// (Outlook).
	XOAUTH2TwoLine XOAUTH2Form = "two-line"
)
