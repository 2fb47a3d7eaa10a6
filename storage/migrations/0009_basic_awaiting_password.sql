-- Basic credentials imported from another environment carry their login but never their
-- password: until `PUT /v1/basic/{name}` sets one, the password is NULL and the credential
-- answers 409 `awaiting_password` instead of a header that cannot work.
ALTER TABLE basic_credentials ALTER COLUMN password DROP NOT NULL;
