package modes

// MaildirOnDelete are the delete policies of the maildir backend.
var MaildirOnDelete = List[OnDelete]{Remove, Keep}
