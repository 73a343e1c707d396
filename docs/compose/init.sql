-- The demo schema of tests/fixtures/debezium (customers / orders / products).
CREATE TABLE customers (
  id serial PRIMARY KEY,
  email varchar(200) NOT NULL,
  full_name varchar(200) NOT NULL DEFAULT '',
  notes text,
  is_active boolean NOT NULL DEFAULT true,
  balance numeric(10,2) NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  birth_date date,
  profile jsonb,
  external_id uuid NOT NULL DEFAULT gen_random_uuid()
);
CREATE TABLE orders (
  order_id bigint NOT NULL,
  line_no int NOT NULL,
  customer_id int NOT NULL,
  quantity int NOT NULL,
  price numeric(12,4) NOT NULL,
  created_at timestamp NOT NULL DEFAULT now(),
  PRIMARY KEY (order_id, line_no)
);
CREATE TABLE products (
  id serial PRIMARY KEY,
  sku varchar(40) NOT NULL,
  name varchar(200) NOT NULL,
  weight_kg double precision,
  stock smallint NOT NULL DEFAULT 0,
  discontinued boolean NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE products REPLICA IDENTITY FULL;
