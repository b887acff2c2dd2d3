package modes

// Provider names an OAuth2 provider, which gives the endpoints and the
// default scopes of an oauth2 section.
type Provider string

const (
	ProviderGoogle    Provider = "google"
	ProviderMicrosoft Provider = "microsoft"
	// ProviderCustom has no endpoints or scopes of its own: the section
	// sets them.
	ProviderCustom Provider = "custom"
)

// Providers are the OAuth2 providers. A provider must be set: the first
// is no default.
var Providers = List[Provider]{ProviderGoogle, ProviderMicrosoft, ProviderCustom}

// DefaultMicrosoftTenant is the Microsoft tenant of an empty tenant
// setting: "common" accepts both personal (Outlook.com) and work or
// school accounts.
const DefaultMicrosoftTenant = "common"
